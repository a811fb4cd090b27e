"""Key lookups awaited on the event loop (PostgreSQL): the same answers as a session, the latest
committed state, read-only connections of their own, and the worker path whenever the loop
cannot read (no idle connection, an error, a timeout, a cancelled read)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

import sessionary.kit.async_read as async_read
from sessionary.accounts.service import AccountService
from sessionary.accounts.store import AccountStore
from sessionary.kit.async_read import AsyncReader
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.test_loop_read import assert_keys_checked_without_the_worker


def _postgres_only(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite reads on the loop itself (test_loop_read.py)")


def _prefix(tenant: Tenant) -> str:
    return tenant.api_key[: len("sk_sy_") + 12]


async def _ready(reader: AsyncReader) -> None:
    """Wait for the connection the first read asked for (opened in the background)."""
    for _ in range(500):
        if reader._idle:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no connection was opened")


def _with_reader(db: Database, scenario: Callable[[AsyncReader], Awaitable[Any]]) -> Any:
    reader = AsyncReader(db.engine, 2)

    async def run() -> Any:
        assert await AccountStore.key_by_prefix_awaited(reader, "sk_sy_nothinghere") == (
            False,
            None,
        )  # no idle connection yet: read elsewhere, one is opened meanwhile
        await _ready(reader)
        return await scenario(reader)

    try:
        return asyncio.run(run())
    finally:
        reader.close()


def test_other_engines_never_read_here(db: Database) -> None:
    if db.dialect == "postgresql":
        assert db.async_reads.enabled
        return
    assert not db.async_reads.enabled
    assert asyncio.run(db.async_reads.first(text("SELECT 1"), {})) == (False, None)  # type: ignore[arg-type]


def test_an_awaited_read_answers_what_a_session_reads(db: Database, tenant: Tenant) -> None:
    _postgres_only(db)
    with db.session(write=False) as session:
        expected = AccountStore(session).key_by_prefix(_prefix(tenant))
    assert expected is not None and expected.revoked_at is None

    async def scenario(reader: AsyncReader) -> None:
        read, found = await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        assert read and found._asdict() == expected._asdict()
        with db.session() as session:  # committed elsewhere: seen by the very next read
            AccountService(session).revoke_key(tenant.key_id)
        read, found = await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        assert read and found.revoked_at is not None and found.revoked_at.tzinfo is not None
        assert await AccountStore.key_by_prefix_awaited(reader, "sk_sy_nothinghere") == (
            True,
            None,
        )

    _with_reader(db, scenario)


def test_the_awaited_connections_cannot_write_nor_hold_a_snapshot(
    db: Database, tenant: Tenant
) -> None:
    _postgres_only(db)

    async def scenario(reader: AsyncReader) -> None:
        await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        connection = reader._idle[0]
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await connection.execute("DELETE FROM api_keys")

    _with_reader(db, scenario)
    with db.session(write=False) as session:
        assert AccountStore(session).key_by_prefix(_prefix(tenant)) is not None


def test_a_failed_read_drops_its_connection_and_reads_elsewhere(
    db: Database, tenant: Tenant
) -> None:
    _postgres_only(db)

    async def scenario(reader: AsyncReader) -> None:
        broken = reader._idle[0]
        broken.pgconn.finish()  # the server went away under it
        assert await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant)) == (False, None)
        assert reader._idle == [] and reader._open == 0
        await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))  # opens another
        await _ready(reader)
        read, found = await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        assert read and found.id == tenant.key_id

    _with_reader(db, scenario)


def test_a_cancelled_read_never_leaves_its_connection_for_the_next(
    db: Database, tenant: Tenant
) -> None:
    """A client that hangs up mid-read cancels it: the connection, mid-statement, is dropped,
    never handed to the next read (which would read the cancelled statement's answer)."""
    _postgres_only(db)

    async def scenario(reader: AsyncReader) -> None:
        task = asyncio.create_task(reader.first(text("SELECT pg_sleep(5)"), {}))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reader._idle == [] and reader._open == 0

    _with_reader(db, scenario)


def test_a_connection_in_use_when_the_reader_closes_is_closed_after_its_read(
    db: Database, tenant: Tenant
) -> None:
    """The app shuts down (or a new loop takes over) during a read: the read still answers,
    and its connection is closed then instead of going back among the idle ones."""
    _postgres_only(db)

    async def scenario(reader: AsyncReader) -> None:
        connection = reader._idle[0]
        task = asyncio.create_task(reader.first(select(func.pg_sleep(0.2).label("slept")), {}))
        await asyncio.sleep(0.05)
        reader.close()
        assert (await task)[0]
        assert reader._idle == [] and connection.closed and reader._open == 0

    _with_reader(db, scenario)


def test_a_read_that_times_out_pauses_awaited_reads_and_a_slow_one_does_not(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read past TIMEOUT_S is abandoned (worker path) and turns these reads off for PAUSE_S:
    a sick database costs one request, not every request. A read that is only slow is answered
    and pauses nothing (it never held the loop; under load, most of its wait is the loop's)."""
    _postgres_only(db)
    monkeypatch.setattr(async_read, "TIMEOUT_S", 0.5)

    async def scenario(reader: AsyncReader) -> None:
        read, _ = await reader.first(select(func.pg_sleep(0.2).label("slept")), {})
        assert read and reader._paused_until == 0.0
        read, found = await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        assert read and found.id == tenant.key_id
        assert await reader.first(select(func.pg_sleep(2).label("slept")), {}) == (False, None)
        assert reader._open == 0  # the connection mid-statement was dropped
        assert await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant)) == (False, None)
        monkeypatch.setattr(time, "monotonic", lambda: 10**9)  # PAUSE_S later
        assert await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant)) == (False, None)
        monkeypatch.undo()
        reader._paused_until = 0.0
        await _ready(reader)
        read, found = await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        assert read and found.id == tenant.key_id

    _with_reader(db, scenario)


def test_a_new_event_loop_gets_connections_of_its_own(db: Database, tenant: Tenant) -> None:
    """psycopg's async connections belong to the loop that opened them: on another loop (a
    second app in one process) the reader closes them and opens its own there."""
    _postgres_only(db)
    reader = AsyncReader(db.engine, 2)

    async def read_once() -> tuple[bool, Any]:
        await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))
        await _ready(reader)
        return await AccountStore.key_by_prefix_awaited(reader, _prefix(tenant))

    try:
        assert asyncio.run(read_once())[0]
        first = reader._idle[0]
        assert asyncio.run(read_once())[0]
        assert first.closed and reader._idle[0] is not first and reader._open == 1
    finally:
        reader.close()


def reads_db(client: TestClient) -> Database:
    """The serving app's own database."""
    served: Database = client.app.state.db  # type: ignore[attr-defined]
    return served


def test_api_keys_are_resolved_without_the_worker_path(
    client: TestClient, db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the reader has a connection, an API key request never asks a worker; a bad key
    is still a 401, and a revocation is refused at the next request."""
    _postgres_only(db)
    reads = client.app.state.db.async_reads  # type: ignore[attr-defined]
    for _ in range(100):
        assert client.get("/v1/me", headers=tenant.headers).status_code == 200
        if reads._idle:
            break
        time.sleep(0.02)
    assert_keys_checked_without_the_worker(client, tenant, monkeypatch)
    # Revoked by the serving process, which drops what it keeps at its own commit; another
    # process learns of it by a notice, milliseconds later (`kit/notified.py`).
    with reads_db(client).session() as session:
        AccountService(session).revoke_key(tenant.key_id)
    answer = client.get("/v1/me", headers=tenant.headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "revoked_api_key"
