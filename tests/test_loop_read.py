"""Key lookups on the event loop (SQLite): the same answers as a session, the latest committed
state, no transaction left open, and the worker path whenever the loop cannot read."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import bindparam, create_engine, select, text

import sessionary.accounts.principal as principal_module
import sessionary.kit.loop_read as loop_read_module
from sessionary.accounts.models import ApiKey
from sessionary.accounts.service import AccountService
from sessionary.accounts.store import AccountStore
from sessionary.kit.db import Database
from sessionary.kit.loop_read import SLOW_MS, LoopReader, SlowPauses
from tests.conftest import Tenant


def _sqlite_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite only: PostgreSQL awaits its key reads (test_async_read.py)")


def _prefix(tenant: Tenant) -> str:
    return tenant.api_key[: len("sk_sy_") + 12]


def _loop_row(db: Database, tenant: Tenant) -> Any:
    read, row = AccountStore.key_by_prefix_on_loop(db.loop_reads, _prefix(tenant))
    assert read
    return row


def test_a_loop_read_answers_what_a_session_reads(db: Database, tenant: Tenant) -> None:
    if db.dialect != "sqlite":
        assert not db.loop_reads.enabled  # PostgreSQL awaits its reads instead (test_async_read.py)
        assert db.loop_reads.first(text("SELECT 1"), {}) == (False, None)  # type: ignore[arg-type]
        return
    with db.session() as session:
        AccountService(session).revoke_key(tenant.key_id)  # a datetime to convert back
    with db.session(write=False) as session:
        expected = AccountStore(session).key_by_prefix(_prefix(tenant))
    assert expected is not None
    found = _loop_row(db, tenant)
    assert found._asdict() == expected._asdict()
    assert found.revoked_at.tzinfo is not None  # the column's type ran, not the raw string
    assert AccountStore.key_by_prefix_on_loop(db.loop_reads, "sk_sy_nothinghere") == (True, None)


def test_a_loop_read_sees_each_commit_and_holds_no_snapshot(db: Database, tenant: Tenant) -> None:
    """Each read is its own statement in autocommit: a later commit by another connection is
    seen at once, and no read transaction stays open to pin the WAL (a full checkpoint can
    truncate it right after a read)."""
    _sqlite_only(db)
    assert _loop_row(db, tenant).revoked_at is None
    with db.session() as session:
        AccountService(session).revoke_key(tenant.key_id)
    assert _loop_row(db, tenant).revoked_at is not None
    path = db.engine.url.database
    assert path
    other = sqlite3.connect(path)
    try:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    assert busy == 0


def test_the_loop_connection_cannot_write(db: Database, tenant: Tenant) -> None:
    _sqlite_only(db)
    _loop_row(db, tenant)
    connection = db.loop_reads._local.connection
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
        connection.execute("DELETE FROM api_keys")


def test_api_keys_are_resolved_without_the_worker_path(
    client: TestClient, db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its last_used_at is fresh, an API key is read on the loop: the worker path is never
    asked, and a bad key is still a 401. (External users' key headers take the same path:
    `tests/test_external_users.py -k beside` checks their answers.)"""
    _sqlite_only(db)
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200  # touches the key
    assert_keys_checked_without_the_worker(client, tenant, monkeypatch)


def assert_keys_checked_without_the_worker(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the worker path made to fail, the tenant's key is still answered (read on the
    loop), and a wrong key is still a 401."""

    def no_worker(*args: Any) -> Any:
        raise AssertionError("the worker path was taken")

    monkeypatch.setattr(principal_module, "_resolve", no_worker)
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200
    wrong = {"Authorization": f"Bearer {tenant.api_key[:-1]}x"}
    answer = client.get("/v1/me", headers=wrong)
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "Invalid API key."


def test_a_failed_loop_read_falls_back_to_the_worker_path(
    client: TestClient, db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read the loop cannot make (here: every connection attempt fails) is no error for the
    caller: the request is resolved on a worker, revocations included."""
    _sqlite_only(db)
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200

    def broken(self: LoopReader) -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(LoopReader, "_connection", broken)
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200
    with db.session() as session:
        AccountService(session).revoke_key(tenant.key_id)
    answer = client.get("/v1/me", headers=tenant.headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "revoked_api_key"


class _SlowConnection:
    """A loop connection whose reads take `delay` seconds (a reader stuck on a WAL read mark)."""

    def __init__(self, real: sqlite3.Connection, delay: float) -> None:
        self.real, self.delay = real, delay

    def execute(self, *args: Any) -> sqlite3.Cursor:
        time.sleep(self.delay)
        return self.real.execute(*args)


def test_a_slow_loop_read_pauses_loop_reads(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite retries a blocked WAL read mark for up to ~10 s whatever the busy timeout: one
    read slower than SLOW_MS turns loop reads off for a while, so later requests take the
    worker path instead of stalling the loop in turn."""
    _sqlite_only(db)
    real = LoopReader._connection
    monkeypatch.setattr(
        LoopReader, "_connection", lambda self: _SlowConnection(real(self), SLOW_MS / 1000 * 2)
    )
    began = time.monotonic()
    slow = _loop_row(db, tenant)  # answered, but slow
    assert slow.id == tenant.key_id
    assert AccountStore.key_by_prefix_on_loop(db.loop_reads, _prefix(tenant)) == (False, None)
    # Off for ten times the read's time: the 1 s floor here, for a read of about 100 ms.
    off = db.loop_reads._paused_until - began
    assert loop_read_module.MIN_PAUSE_S <= off < loop_read_module.PAUSE_S / 2
    monkeypatch.setattr(time, "monotonic", lambda: 10**9)  # PAUSE_S later
    assert _loop_row(db, tenant).id == tenant.key_id


def test_a_loop_path_stays_off_ten_times_its_slowness_and_longer_when_it_recurs() -> None:
    """`SlowPauses`: ten times the slowness, from 1 s up to `PAUSE_S`, doubled for each recent
    pause; the count of recent pauses drops by one per `PAUSE_S` of quiet, so a stall paced to
    come back after each quiet spell (an attack did) does not find the short pauses again."""
    pauses = SlowPauses()
    assert pauses.next(0.06, now=0.0) == 1.0  # the floor
    assert pauses.next(0.06, now=1000.0) == 1.0  # long after: nothing recent
    assert pauses.next(0.3, now=5000.0) == pytest.approx(3.0)  # a one-off 300 ms stall
    now, paced = 5003.0, []
    for _ in range(5):  # back one second after the path came on, each time
        now += 1.0
        paced.append(pauses.next(0.3, now=now))
        now += paced[-1]
    assert paced == pytest.approx([6.0, 12.0, 24.0, 30.0, 30.0])
    # The attack's rhythm: wait out one quiet spell, then stall again. The pauses stay long.
    now += 31.0
    assert pauses.next(0.3, now=now) == 30.0
    now += 30.0 + 31.0
    assert pauses.next(0.3, now=now) == 30.0
    assert pauses.next(0.3, now=now + 30.0 + 10 * 31.0) == pytest.approx(3.0)  # quiet long enough
    assert SlowPauses().next(10.0, now=0.0) == loop_read_module.PAUSE_S == 30.0  # the cap


class _CollectingConnection:
    """A connection whose statements start with a full garbage collection."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    def execute(self, *args: Any) -> sqlite3.Cursor:
        gc.collect()
        return self.real.execute(*args)


def test_a_read_that_met_the_collector_pauses_nothing(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection stops every thread wherever it starts: a read it lengthened is not a
    slow database. The threshold is a quarter of what the collection takes here."""
    _sqlite_only(db)
    heap = [[index] for index in range(1_000_000)]  # containers the collector walks
    began = time.perf_counter()
    gc.collect()
    monkeypatch.setattr(loop_read_module, "SLOW_MS", (time.perf_counter() - began) * 1000 / 4)
    real = LoopReader._connection
    monkeypatch.setattr(LoopReader, "_connection", lambda self: _CollectingConnection(real(self)))
    assert _loop_row(db, tenant).id == tenant.key_id
    monkeypatch.setattr(LoopReader, "_connection", real)
    assert _loop_row(db, tenant).id == tenant.key_id  # loop reads still on
    assert len(heap) == 1_000_000


def test_the_loop_reader_never_creates_a_database(tmp_path: Path) -> None:
    """Opened without create: a missing file is a read elsewhere, not a new empty database."""
    missing = tmp_path / "gone.db"
    reader = LoopReader(create_engine(f"sqlite:///{missing}"))
    assert reader.first(select(ApiKey.id).where(ApiKey.prefix == bindparam("p")), {"p": "x"}) == (
        False,
        None,
    )
    assert not missing.exists()


def test_a_turns_prompt_is_read_on_the_loop_without_a_connection(
    db: Database, tenant: Tenant
) -> None:
    """A turn's plan runs on the loop (`kit/loop_units.py`) and reads the account's prompt
    through the loop's reader: no connection is checked out for it, each read sees the latest
    commit (nothing is kept: SQLite has no notices), and a paused reader, or a unit on a
    worker, reads it through the session as before."""
    _sqlite_only(db)
    assert db.loop_units is not None
    pool = db.loop_units.engine.pool

    def set_prompt(prompt: str) -> None:
        with db.session() as session:
            AccountService(session).set_assistant(
                tenant.account_id, system_prompt=prompt, model=None
            )

    def prompt_on_loop() -> tuple[str | None, int]:
        with db.point_reads() as session:
            prompt = AccountStore(session).system_prompt(tenant.account_id)
            return prompt, pool.checkedout()  # type: ignore[attr-defined]

    async def on_loop() -> tuple[str | None, int]:
        return await db.in_worker(prompt_on_loop, loop_ok=True)

    def reader_on() -> None:  # a slow read on a busy machine pauses the reader: not this test's
        db.loop_reads._paused_until = 0.0

    set_prompt("First prompt.")
    ran = db.loop_units.ran
    reader_on()
    assert asyncio.run(on_loop()) == ("First prompt.", 0)
    assert db.loop_units.ran == ran + 1  # it did run on the loop
    set_prompt("Second prompt.")
    reader_on()
    assert asyncio.run(on_loop()) == ("Second prompt.", 0)
    db.loop_reads._paused_until = time.monotonic() + 30  # the reader is off: the session reads
    assert asyncio.run(on_loop()) == ("Second prompt.", 1)
    db.loop_reads._paused_until = 0.0
    with db.point_reads() as session:  # a worker's (not the loop's) session: no reader in it
        assert loop_read_module.loop_reader_of(session) is None
        assert AccountStore(session).system_prompt(tenant.account_id) == "Second prompt."
