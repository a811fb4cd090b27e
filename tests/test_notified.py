"""Keys and account prompts kept by a server process on PostgreSQL (`kit/notified.py`): kept
at all, and dropped by every process as soon as the database reports a change, when the process
may have missed a report, or after `auth_cache_seconds` whatever happens."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sessionary.accounts.service import AccountService, key_prefix
from sessionary.accounts.store import AccountStore
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from sessionary.kit.notified import (
    ACCOUNT_ENTRIES,
    ALIVE_S,
    APPLICATION_NAME,
    CHANNEL,
    CHECK_S,
    MAX_ENTRIES,
)
from tests.support.databases import PostgresFixture
from tests.support.live import LiveServer, run_cli

pytestmark = pytest.mark.postgres

KEEP_LONG = "3600"  # so that only a notice (or a lost listener) can explain a fresh read


def _until(check: Callable[[], bool], within_s: float) -> float:
    """Seconds until `check()` held; fails after `within_s`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within_s, f"not within {within_s} s"
        time.sleep(0.01)
    return time.monotonic() - start


def _sql(url: str, *statements: str) -> Any:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        for statement in statements:
            cursor = connection.execute(statement)
        return cursor.fetchall() if cursor.description else None


@pytest.fixture
def env(postgres: PostgresFixture, tmp_path: Path) -> dict[str, str]:
    return {
        "SESSIONARY_DATA_DIR": str(tmp_path / "data"),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_PRELOAD_MODELS": "false",
        "SESSIONARY_DATABASE_URL": postgres.new_database(),
        "SESSIONARY_AUTH_CACHE_SECONDS": KEEP_LONG,
    }


def _init(env: dict[str, str]) -> str:
    return next(line for line in run_cli(["init"], env).splitlines() if line.startswith("sk_sy_"))


def _status(server: LiveServer, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(f"{server.base_url}/v1/me", headers=headers, timeout=10).status_code


def _warm(server: LiveServer, key: str) -> None:
    """A few requests: the first ones read the key in a session (its `last_used_at` is written,
    and the loop's connections are opened meanwhile), and are not kept."""
    for _ in range(4):
        assert _status(server, key) == 200


def _listener_pids(url: str) -> list[int]:
    rows = _sql(
        url,
        f"SELECT pid FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}' "
        "AND datname = current_database()",
    )
    return [row[0] for row in rows]


def _revoke_unnoticed(url: str, key: str) -> None:
    """Revoke in plain SQL with the tables' triggers off: no process hears of it."""
    _sql(
        url,
        "ALTER TABLE api_keys DISABLE TRIGGER api_keys_auth_changed",
        f"UPDATE api_keys SET revoked_at = now() WHERE prefix = '{key_prefix(key)}'",
        "ALTER TABLE api_keys ENABLE TRIGGER api_keys_auth_changed",
    )


def test_a_key_revoked_through_one_process_is_refused_by_another_at_once(
    env: dict[str, str],
) -> None:
    key = _init(env)
    first, second = LiveServer(env), LiveServer(env)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        spare = httpx.post(f"{first.base_url}/v1/keys", headers=headers, timeout=10).json()["key"]
        _warm(second, key)  # the second process keeps the key from here
        keys = httpx.get(f"{first.base_url}/v1/keys", headers=headers, timeout=10).json()["data"]
        key_id = next(k["id"] for k in keys if k["prefix"] == key_prefix(key))
        revoked = httpx.delete(
            f"{first.base_url}/v1/keys/{key_id}",
            headers={"Authorization": f"Bearer {spare}"},
            timeout=10,
        )
        assert revoked.status_code == 200, revoked.text
        _until(lambda: _status(second, key) == 401, within_s=2)
        assert all(_status(server, key) == 401 for server in (first, second) for _ in range(10))
        assert _status(second, spare) == 200
    finally:
        first.stop()
        second.stop()


def test_a_process_keeps_a_key_until_the_database_reports_a_change(env: dict[str, str]) -> None:
    key = _init(env)
    server = LiveServer(env)
    url = env["SESSIONARY_DATABASE_URL"]
    try:
        _until(lambda: len(_listener_pids(url)) == 1, within_s=10)
        _warm(server, key)
        forged = key[:-6] + ("AAAAAA" if not key.endswith("AAAAAA") else "BBBBBB")
        assert key_prefix(forged) == key_prefix(key)
        assert _status(server, forged) == 401  # a kept key's prefix, another secret
        _revoke_unnoticed(url, key)
        assert _status(server, key) == 200  # kept: nothing said it changed
        _sql(url, f"NOTIFY {CHANNEL}")
        _until(lambda: _status(server, key) == 401, within_s=2)
    finally:
        server.stop()


def test_a_process_that_lost_its_listener_keeps_nothing_it_may_have_missed(
    env: dict[str, str],
) -> None:
    key = _init(env)
    server = LiveServer(env)
    url = env["SESSIONARY_DATABASE_URL"]
    try:
        _until(lambda: len(_listener_pids(url)) == 1, within_s=10)
        [listener] = _listener_pids(url)
        _warm(server, key)
        _sql(url, f"SELECT pg_terminate_backend({listener})")
        _revoke_unnoticed(url, key)  # while the process is not listening: a missed notice
        _until(lambda: _listener_pids(url) not in ([], [listener]), within_s=10)
        assert _status(server, key) == 401
    finally:
        server.stop()


def test_nothing_is_kept_longer_than_auth_cache_seconds(env: dict[str, str]) -> None:
    key = _init(env)
    server = LiveServer({**env, "SESSIONARY_AUTH_CACHE_SECONDS": "1"})
    url = env["SESSIONARY_DATABASE_URL"]
    try:
        _until(lambda: len(_listener_pids(url)) == 1, within_s=10)
        _warm(server, key)
        _revoke_unnoticed(url, key)
        _until(lambda: _status(server, key) == 401, within_s=3)
    finally:
        server.stop()


@pytest.fixture
def database(postgres: PostgresFixture, tmp_path: Path) -> Iterator[Database]:
    # an application_name of the operator's own: the listener sets its own beside it (both
    # given once made the listener fail to connect, for ever, with nothing kept)
    url = f"{postgres.new_database()}&application_name=operators_app"
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, log_level="WARNING", preload_models=False
    )
    database = Database(settings)
    upgrade(database)
    database.start_listening()
    _until(lambda: database.notified.listening, within_s=10)
    yield database
    database.dispose()


def _prompt(database: Database, account_id: str) -> str | None:
    with database.point_reads() as session:
        return AccountStore(session).system_prompt(account_id)


def test_a_prompt_changed_elsewhere_is_read_anew_and_a_rolled_back_one_never(
    database: Database,
) -> None:
    url = database.settings.sqlalchemy_url
    with database.session() as session:
        account, _ = AccountService(session).create_account("prompted")
    assert _prompt(database, account.id) is None
    _sql(url, f"UPDATE accounts SET system_prompt = 'Be brief.' WHERE id = '{account.id}'")
    _until(lambda: _prompt(database, account.id) == "Be brief.", within_s=2)
    notices = database.notified.notices
    with database.session() as session:  # a change read in its own transaction, then undone
        AccountService(session).set_assistant(account.id, system_prompt="Draft.", model=None)
        session.flush()
        assert AccountStore(session).system_prompt(account.id) == "Draft."
        session.rollback()
    assert _prompt(database, account.id) == "Be brief."
    assert database.notified.notices == notices  # no commit, no notice: nothing to drop


def test_a_value_read_while_a_notice_arrived_is_not_kept(database: Database) -> None:
    kept = database.notified
    epoch = kept.epoch()
    notices = kept.notices
    _sql(database.settings.sqlalchemy_url, f"NOTIFY {CHANNEL}")
    _until(lambda: kept.notices > notices, within_s=2)
    kept.put("read before the notice", "stale", epoch, "acct_a")
    assert kept.get("read before the notice") == (False, None)
    kept.put("read after it", "fresh", kept.epoch(), "acct_a")
    assert kept.get("read after it") == (True, "fresh")


def test_one_account_cycling_through_many_keys_never_evicts_another(database: Database) -> None:
    """An account's entries beyond `ACCOUNT_ENTRIES` evict its own oldest: a tenant using
    thousands of keys in turn (more than the cache holds) leaves the others' entries kept."""
    kept = database.notified
    kept.put(("key", "victim"), "victim's key", kept.epoch(), "acct_victim")
    for n in range(MAX_ENTRIES + 500):
        kept.put(("key", f"churn-{n}"), "a key", kept.epoch(), "acct_churner")
    assert kept.get(("key", "victim")) == (True, "victim's key")
    newest = MAX_ENTRIES + 499
    assert kept.get(("key", f"churn-{newest}")) == (True, "a key")
    assert kept.get(("key", f"churn-{newest - ACCOUNT_ENTRIES}")) == (False, None)
    assert len(kept._entries) == ACCOUNT_ENTRIES + 1


def _kept(database: Database, account_id: str) -> bool:
    return database.notified.get(("prompt", account_id))[0]


def test_a_change_drops_what_is_kept_of_its_account_alone(database: Database) -> None:
    """A notice names the account whose key or prompt changed, and a process drops that
    account's entries only: an account changing its prompt over and over (through the API in
    this process, or by SQL from anywhere) leaves what is kept for the others in place, while
    its own prompt is read anew each time. A TRUNCATE names no account: everything goes."""
    url = database.settings.sqlalchemy_url
    with database.session() as session:
        noisy, _ = AccountService(session).create_account("noisy")
        quiet, _ = AccountService(session).create_account("quiet")
    assert _prompt(database, quiet.id) is None and _prompt(database, noisy.id) is None
    assert _kept(database, quiet.id) and _kept(database, noisy.id)
    for n in range(3):
        with database.session() as session:  # this process: dropped at its own commit
            AccountService(session).set_assistant(noisy.id, system_prompt=f"API {n}", model=None)
        assert not _kept(database, noisy.id)
        assert _prompt(database, noisy.id) == f"API {n}"
        notices = database.notified.notices
        _sql(url, f"UPDATE accounts SET system_prompt = 'SQL {n}' WHERE id = '{noisy.id}'")
        _until(lambda seen=notices: database.notified.notices > seen, within_s=2)
        assert _prompt(database, noisy.id) == f"SQL {n}"
        assert _kept(database, quiet.id)  # never dropped by the other's changes
    assert _prompt(database, noisy.id) == "SQL 2" and _kept(database, noisy.id)
    notices = database.notified.notices
    _sql(url, f"DELETE FROM accounts WHERE id = '{noisy.id}'")  # its keys go with it: one notice
    _until(lambda: database.notified.notices > notices, within_s=2)
    assert not _kept(database, noisy.id) and _kept(database, quiet.id)
    time.sleep(0.2)
    assert database.notified.notices == notices + 1
    _sql(url, "TRUNCATE api_keys CASCADE")  # names no account
    _until(lambda: not _kept(database, quiet.id), within_s=2)


def test_a_listener_whose_connection_went_quiet_stops_counting(database: Database) -> None:
    """The listener's server process stopped (as a dropped network would leave it): no error,
    no notice, ever. Within `ALIVE_S` and a check the process keeps nothing, and reads a prompt
    changed meanwhile; once the connection answers again, it keeps values again."""
    url = database.settings.sqlalchemy_url.split("&application_name")[0]
    with database.session() as session:
        account, _ = AccountService(session).create_account("quiet")
    assert _prompt(database, account.id) is None  # kept
    [listener] = _listener_pids(url)
    try:
        os.kill(listener, signal.SIGSTOP)
    except PermissionError:
        pytest.skip("the database's server processes belong to another user")
    try:
        _sql(
            url,
            "ALTER TABLE accounts DISABLE TRIGGER accounts_auth_changed",
            f"UPDATE accounts SET system_prompt = 'Unheard.' WHERE id = '{account.id}'",
            "ALTER TABLE accounts ENABLE TRIGGER accounts_auth_changed",
        )
        assert _prompt(database, account.id) is None  # still kept: nothing said it changed
        _until(lambda: not database.notified.listening, within_s=ALIVE_S + CHECK_S + 2)
        assert _prompt(database, account.id) == "Unheard."
    finally:
        os.kill(listener, signal.SIGCONT)
    _until(lambda: database.notified.listening, within_s=10)
