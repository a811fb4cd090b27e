"""Point reads awaited on the event loop, on PostgreSQL: no worker-thread hand-off.

Every authenticated request reads its key. On SQLite that read runs on the loop itself
(`kit/loop_read.py`); on PostgreSQL a read is a round trip, which a synchronous call would
spend blocking the loop, so it went to a worker thread and back: in-process on PostgreSQL the
key check cost a request about 1 ms against 0.1 ms on SQLite's loop. Here the read is awaited
on psycopg's asyncio connections instead, and the loop serves others while it waits.

What it never does, as `loop_read.py`:
- make a request wait for a connection: its connections are its own (never the pool's); with
  none idle, the request takes the worker path and one more connection is opened in the
  background, up to `size`;
- write: each connection is read-only (`default_transaction_read_only`) and in autocommit,
  so each statement reads the latest committed state and no snapshot is held between calls;
- raise a database error: any error, a timeout or a cancelled read drops that connection and
  means "read elsewhere" (the caller takes the worker path); a read unanswered after
  `TIMEOUT_S` turns these reads off for `PAUSE_S`, and a failed connect waits `RETRY_S` before
  the next. A read that is merely slow is no reason to stop: unlike SQLite's loop reads it does
  not hold the loop while it waits, and under load most of its time is the busy loop's own
  delay in coming back to it (pausing at 50 ms, these reads were off most of the time).

Connections belong to the event loop that opened them: on another loop (a second app in the
same process) they are closed and reopened there. Tests: `tests/test_async_read.py`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.sql import Select

from sessionary.kit.raw_sql import plan_of

log = structlog.get_logger("sessionary.db")

TIMEOUT_S = 1.0
PAUSE_S = 30.0
RETRY_S = 5.0


class AsyncReader:
    """Up to `size` read-only psycopg async connections, for the statements given to `first`."""

    def __init__(self, engine: Engine, size: int) -> None:
        self.dialect = engine.dialect
        self.enabled = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self.size = max(1, size)
        self._connect = engine.dialect.create_connect_args(engine.url) if self.enabled else None
        self._idle: list[Any] = []
        self._open = 0  # connections open or being opened, idle or in use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0  # bumped by `close`: connections of an older one are not counted
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0  # monotonic seconds
        self._connect_after = 0.0

    async def first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[bool, Any]:
        """(True, the first row or None), or (False, None) when the caller must read elsewhere:
        never an exception from the database."""
        if not self.enabled or time.monotonic() < self._paused_until:
            return False, None
        self._own_loop()
        if not self._idle:
            self._open_one_later()
            return False, None
        connection = self._idle.pop()
        generation = self._generation
        plan = plan_of(statement, self.dialect, params)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                cursor = await connection.execute(plan.sql, plan.arguments(params))
                found = await cursor.fetchone()
        except (Exception, asyncio.CancelledError) as exc:
            self._drop(connection, generation)  # mid-statement: its state is unknown
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError):
                self._paused_until = time.monotonic() + PAUSE_S
                log.warning("async_reads_paused", reason="timed out", seconds=PAUSE_S)
            log.warning("async_read_failed", error=type(exc).__name__, reason=str(exc)[:200])
            return False, None
        if generation == self._generation:
            self._idle.append(connection)
        else:  # closed while this read ran
            connection.pgconn.finish()
        return True, None if found is None else plan.row(found)

    def close(self) -> None:
        """Close every idle connection at once (the app's shutdown, or a new event loop); one
        still being opened is closed when it arrives, and one in use when its read ends."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.pgconn.finish()  # synchronous: callable off the loop, or after it
        self._open, self._loop = 0, None
        self._generation += 1

    def _own_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            self._loop = loop

    def _open_one_later(self) -> None:
        if self._open >= self.size or time.monotonic() < self._connect_after:
            return
        self._open += 1
        task = asyncio.get_running_loop().create_task(self._open_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_one(self) -> None:
        import psycopg  # only where PostgreSQL is used: SQLite servers never load the driver

        assert self._connect is not None
        args, kwargs = self._connect
        generation = self._generation
        try:
            connection = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
            await connection.execute("SET default_transaction_read_only = on")
        except Exception as exc:
            if generation == self._generation:
                self._open -= 1
            self._connect_after = time.monotonic() + RETRY_S
            log.warning("async_read_connect_failed", reason=str(exc)[:200], retry_s=RETRY_S)
            return
        if generation != self._generation:  # closed meanwhile (a new loop, or shutdown)
            connection.pgconn.finish()
            return
        self._idle.append(connection)

    def _drop(self, connection: Any, generation: int) -> None:
        if generation == self._generation:
            self._open -= 1
        connection.pgconn.finish()
