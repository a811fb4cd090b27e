"""Point reads that run on the event loop itself, on SQLite only: no worker-thread hand-off.

A hand-off to a worker and back costs more than an indexed SQLite read (about 0.4 ms of CPU and
wake-ups for a lookup of a few microseconds), and every authenticated request makes one.

Why this is safe on the loop, and what it never does:
- Its connection is its own (one per thread, never the pool): the loop never waits for a pooled
  connection, which is what once deadlocked it against requests that needed the loop to give
  theirs back (`tests/test_auth.py -k exhausted`).
- SQLite's WAL lets a reader read while a writer holds the lock; each statement reads the latest
  committed state, in autocommit, with no transaction left open between calls.
- It only reads (`PRAGMA query_only`, opened without create), and waits `BUSY_MS` for the rare
  lock a reader meets; any error means "read elsewhere", and the caller takes the worker path.
- SQLite does not bound every wait by the busy timeout: a reader that cannot take a WAL read
  mark (another process stuck mid-checkpoint or mid-recovery) retries inside SQLite for up to
  about 10 s. So a read that fails turns loop reads off for `PAUSE_S`, and one that takes
  longer than `SLOW_MS` for as long as `SlowPauses` says (ten times its time, longer when
  slowness recurs): one request pays for a sick database, not every request, and a one-off
  wait on the disk costs a second or so of worker reads, not half a minute
  (`tests/test_loop_read.py -k "slow or pause"`).

Statements are the stores' own Core statements, compiled by `kit/raw_sql.py` (once, with their
parameters and columns converted by their SQLAlchemy types as the engine would).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from sessionary.kit.heap import COLLECTOR_TIME
from sessionary.kit.raw_sql import plan_of

log = structlog.get_logger("sessionary.db")

# A point-reads session's `info` key for the loop's reader, in units run on the loop
LOOP_READER = "sessionary.loop_reader"
BUSY_MS = 20
SLOW_MS = 50
PAUSE_S = 30.0  # the longest a loop path stays off
MIN_PAUSE_S = 1.0
PAUSE_PER_SLOW_S = 10.0  # seconds off per second of slowness that turned it off


class SlowPauses:
    """How long a loop path (these reads, `kit/loop_units.py`'s units) stays off after
    `slow_s` of slowness: ten times as long, doubled for each recent pause, from 1 s to
    `PAUSE_S`. The count of recent pauses drops by one for each `PAUSE_S` of quiet after the
    last one ends, not all at once: an attack that paced its stalls to come back after every
    quiet spell kept finding the short pauses again (4.7 % of the loop's time stalled, against
    1.7 % when every pause lasted `PAUSE_S`). A one-off still costs seconds of worker
    hand-offs, not half a minute."""

    def __init__(self) -> None:
        self._ends = float("-inf")  # monotonic seconds: when the last pause ended
        self._recent = 0  # pauses lately, less one for each PAUSE_S of quiet since

    def next(self, slow_s: float, now: float) -> float:
        quiet = now - self._ends  # the last pause's end is set once there is one
        if self._recent and quiet > 0:
            self._recent = max(self._recent - int(quiet // PAUSE_S), 0)
        seconds = PAUSE_PER_SLOW_S * slow_s * 2.0 ** min(self._recent, 10)
        seconds = min(max(seconds, MIN_PAUSE_S), PAUSE_S)
        self._recent += 1
        self._ends = now + seconds
        return seconds


class LoopReader:
    """One read-only SQLite connection per thread, for the statements given to `first`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.path = engine.url.database if engine.dialect.name == "sqlite" else None
        self.enabled = bool(self.path) and self.path != ":memory:"
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._paused_until = 0.0  # monotonic seconds: loop reads off until then
        self._slow_pauses = SlowPauses()

    def first(self, statement: Select[Any], params: dict[str, Any]) -> tuple[bool, Any]:
        """(True, the first row or None), or (False, None) when the caller must read elsewhere
        (not SQLite, or the read failed): never an exception from the database."""
        read, found = self._read(statement, params, all_rows=False)
        return read, (found[0] if found else None)

    def rows(self, statement: Select[Any], params: dict[str, Any]) -> tuple[bool, list[Any]]:
        """(True, every row), or (False, []) as `first`: for a statement whose rows are few
        (a turn's history, read with a limit on the loop: `conversations/store.py`)."""
        return self._read(statement, params, all_rows=True)

    def _read(
        self, statement: Select[Any], params: dict[str, Any], *, all_rows: bool
    ) -> tuple[bool, list[Any]]:
        if not self.enabled or time.monotonic() < self._paused_until:
            return False, []
        plan = plan_of(statement, self.engine.dialect, params)
        began = time.perf_counter() - COLLECTOR_TIME.seconds
        try:
            cursor = self._connection().execute(plan.sql, plan.arguments(params))
            try:
                if all_rows:
                    found = cursor.fetchall()
                else:
                    one = cursor.fetchone()
                    found = [] if one is None else [one]
            finally:
                cursor.close()  # ends the statement, and with it the read's snapshot
        except sqlite3.Error as exc:
            self._pause(f"failed: {str(exc)[:200]}")
            self._drop()
            return False, []
        # The collector's pauses left out: they stop every thread, wherever the read runs.
        took = time.perf_counter() - COLLECTOR_TIME.seconds - began
        if took * 1000 > SLOW_MS:
            self._pause(f"took {took * 1000:.0f} ms", took)
        return True, [plan.row(row) for row in found]

    def _pause(self, reason: str, slow_s: float | None = None) -> None:
        now = time.monotonic()
        seconds = PAUSE_S if slow_s is None else self._slow_pauses.next(slow_s, now)
        self._paused_until = now + seconds
        log.warning("loop_reads_paused", reason=reason, seconds=round(seconds, 1))

    def close(self) -> None:
        """Close every thread's connection (the app's shutdown, when no read is running)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            assert self.path is not None
            connection = sqlite3.connect(
                f"{Path(self.path).resolve().as_uri()}?mode=rw",  # never creates a file
                uri=True,
                timeout=BUSY_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute("PRAGMA query_only=ON")
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._opened:
                    self._opened.remove(connection)
            connection.close()


def loop_reader_of(session: Session) -> LoopReader | None:
    """The loop's reader, for a point-reads session of a unit running on the event loop
    (`kit/loop_units.py`); None elsewhere. A read it can answer costs about 10 µs where the
    session's first read, which checks a connection out, cost about 170 µs (in-process, a turn's
    prompt read, 8 rounds of 1,000)."""
    found = session.info.get(LOOP_READER)
    return found if isinstance(found, LoopReader) else None
