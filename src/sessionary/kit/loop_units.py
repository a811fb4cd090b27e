"""SQLite: a turn's short units of work run on the event loop itself, not on a worker thread.

A hand-off to a worker thread and back costs two thread wake-ups, which on a small machine cost
more than the unit itself once the process has sat idle between requests (a Responses turn makes
two: its plan and hold, then its settle and transcript; together about 1.3 ms of a one-client
turn, `python -m bench --only gateway`). The units are short (under a millisecond of SQLite and
Python), so running them where the request already is costs the loop nothing it was not paying.

What keeps the loop from ever waiting here (the unit is retried from its start on a worker,
which does wait, whenever it would, or queued for the write turn without blocking the loop):
- Its own engine, whose connections wait for nothing: `PRAGMA busy_timeout=0`, and a pool that
  opens another connection rather than wait for one.
- Writes take this process's write turn (`WriteTurn`) without waiting, and raise `WouldBlock`
  before writing anything when they cannot. Held by a worker of this process or by another
  process of this server, the unit queues for the turn (`run_or_queue`): a worker thread waits
  for the locks while the loop answers other requests, and the loop then runs the queued
  units one after the other, each in its own transaction, holding the turn from one to the next
  (every `BATCH` it lets the loop in). For `SHARED_PAUSE_S` after that, units queue before they
  start, so none does its reads twice. Units used to go to a worker thread instead, where the
  turn was held while that thread waited for the GIL behind the loop: two workers served
  fewer turns a second than one (`python -m bench --only gateway`: 352 against 424 at 64
  clients). Two workers, `/v1/responses`, three interleaved rounds of 1,500 turns: 215, 320
  and 289 turns a second at 16 clients before, 463, 437 and 422 with the queue; at 64
  clients 317, 302 and 285 before, 569, 483 and 363 with it.
- Another program holding SQLite's write lock (`BEGIN IMMEDIATE` answers "database is locked"
  at once), and any other "locked" or "busy" answer on its connections (a reader that meets a
  checkpoint's or a recovery's lock), send the unit to a worker; after another program's lock
  the next `SHARED_PAUSE_S` of units go straight there.
- One thread at a time runs units here; a second (another event loop of the same process)
  takes the worker path. So the write units share one connection, kept checked out from one
  to the next (`LoopUnits.connection`); each begins and ends its own transaction on it.
- Checkpoints never run on the loop: its connections do not checkpoint at commit
  (`wal_autocheckpoint=0`); every `CHECKPOINT_EVERY` units a thread of its own runs a PASSIVE
  checkpoint, which waits for nobody.
- Slow units turn this path off (SQLite can retry inside itself, for a read mark held by a
  stuck process, for seconds): one that took longer than `STALL_MS`, or `SLOW_UNITS` over
  `SLOW_MS` within `SLOW_WINDOW_S`. The path stays off for as long as `loop_read.SlowPauses`
  says: ten times the slowness that turned it off (the window's slow units with it), doubled
  for each recent pause, from 1 s to 30 s. So a one-off costs seconds, not half a minute,
  and units that keep stalling soon find the path off for 30 s at a time. (Units that
  waited 300 ms on the disk, 2 ms of it CPU and 48 blocks read, used to send every unit to a
  worker for 30 s, twice in six minutes of load on a small virtual machine.) A unit's time
  leaves out the garbage collector's pauses meanwhile, which stop every thread wherever the
  unit runs: one full collection (over 100 ms in a loaded process) used to turn the path off
  for good measure, and so did a single hiccup of the machine. A process's first
  `WARM_UNITS` count for nothing: they compile its statements (about 100 ms, once).

So a unit given here must be safe to run again from its start on a worker: at most one write
transaction, and nothing before it that must not happen twice (`Database.in_worker(...,
loop_ok=True)`). `tests/test_loop_units.py` attacks each of these.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import structlog
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from sessionary.kit.heap import COLLECTOR_TIME
from sessionary.kit.loop_read import SlowPauses
from sessionary.kit.unit_threads import call_on_loop, handed_by
from sessionary.kit.write_turn import WriteTurn

log = structlog.get_logger("sessionary.db")

T = TypeVar("T")

SLOW_MS = 50
SLOW_UNITS = 3
SLOW_WINDOW_S = 60.0
STALL_MS = 200
SHARED_PAUSE_S = 1.0
WARM_UNITS = 8
CHECKPOINT_EVERY = 64
BATCH = 8


class WouldBlock(Exception):
    """The unit would wait on the event loop; it is run on a worker thread instead, from its
    start. Raised before the unit's write transaction commits (in practice at its `BEGIN
    IMMEDIATE`), which then rolls back; `Database.commit_apart` lets it through.
    `elsewhere`: another process holds the lock, not this one. `turn`: what it met is this
    server's write turn (`WriteTurn`), which the unit can queue for on the loop."""

    def __init__(self, reason: str, *, elsewhere: bool, turn: bool = False) -> None:
        super().__init__(reason)
        self.elsewhere = elsewhere
        self.turn = turn


# Set while this thread runs a unit here (any `LoopUnits`: one thread runs one unit at a time).
_ON_LOOP = threading.local()


def running_here() -> bool:
    """Whether the calling thread is running a unit on the event loop right now."""
    return getattr(_ON_LOOP, "on", False)


@contextmanager
def running_on_the_loop() -> Iterator[None]:
    """Mark the calling thread as running a unit on the event loop (`running_here`), for the
    block: PostgreSQL's (`kit/pg_loop_units.py`); SQLite's `LoopUnits.run` sets it itself."""
    _ON_LOOP.on = True
    try:
        yield
    finally:
        _ON_LOOP.on = False


def leave_the_loop(reason: str) -> None:
    """Inside a unit running on the loop, one that found its work heavier than its request
    showed (a long stored history, a search index to load): send it, from its start, to a
    worker. Elsewhere: nothing."""
    if running_here():
        raise WouldBlock(reason, elsewhere=False)


def from_worker(call: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """A worker's call to an async function on the event loop (a model's), on `UnitThreads`'
    threads or anyio's. A unit running on the loop itself cannot wait for the loop: it leaves
    it."""
    leave_the_loop("a call to the event loop")
    if handed_by() is not None:
        return call_on_loop(call, *args)
    return anyio.from_thread.run(call, *args)


@dataclass
class _Queued:
    """A unit waiting for the write turn: `done` gets its outcome. `deadline`: the busy timeout
    after it came to the head of its queue, when it starts waiting for the turn itself (the
    units before it are its own process's, as a worker's wait for a thread is not counted
    either); past it the unit is refused."""

    work: Callable[[], Any]
    context: contextvars.Context
    done: asyncio.Future[Any]
    deadline: float | None = None


def _refuse(unit: _Queued) -> None:
    """A unit leaving the queue unrun: its caller went away, or it waited too long."""
    if not unit.done.done():
        unit.done.set_exception(PoolTimeout("No write turn on the SQLite database in time."))


class _TurnQueue:
    """One event loop's units waiting for the write turn, and the task that runs them."""

    def __init__(self) -> None:
        self.waiting: deque[_Queued] = deque()
        self.drain: asyncio.Task[None] | None = None


def _is_busy(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class LoopUnits:
    """Runs units of work on the calling (event loop) thread, with sessions on `engine` (made by
    `kit/db.make_engine(..., on_loop=True)`), or says it did not."""

    def __init__(
        self,
        engine: Engine,
        read_options: dict[str, Any],
        point_options: dict[str, Any],
        write_turn: WriteTurn,
        wait_s: float,
        point_info: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.write_turn = write_turn
        self.wait_s = wait_s  # how long a unit queues for the write turn (the busy timeout)
        self.path = engine.url.database or ""
        self._factories = {
            kind: sessionmaker(
                engine.execution_options(**options),
                expire_on_commit=False,
                close_resets_only=False,
                info=info,
            )
            for kind, options, info in (
                ("write", {}, {}),
                ("read", read_options, {}),
                ("point", point_options, point_info or {}),
            )
        }
        self._running = threading.Lock()
        self._kept: Connection | None = None  # the write units' connection (`connection`)
        self._lent = False  # the kept connection is in a write unit's hands now
        self._runner: int | None = None  # the thread running a unit here now
        self._paused_until = 0.0
        self._slow_pauses = SlowPauses()
        self._units = 0
        self._slow: deque[tuple[float, float]] = deque()  # recent slow units: (ended, took_s)
        self._checkpointing = threading.Lock()
        self._queue_until = 0.0  # units queue for the turn before they start, until then
        self._queues: tuple[asyncio.AbstractEventLoop, _TurnQueue] | None = None
        self._met_turn = False  # the last unit here met the write turn held
        self.ran = 0  # units run here
        self.sent_away = 0  # units sent to a worker after starting here
        self.queued = 0  # units that queued on the loop for the write turn

        @event.listens_for(engine, "handle_error")
        def _busy_means_elsewhere(context: Any) -> BaseException | None:
            if _is_busy(context.original_exception):
                return WouldBlock(str(context.original_exception), elsewhere=True)
            return None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The connection for a write unit here: one kept checked out from unit to unit, since
        units run one at a time. Checking one out of the pool and back for each unit, with
        the `Connection` built around it, cost about 45 µs of a unit's transaction (a bare
        write transaction of one UPDATE: 92 µs through the pool, 45 on a kept connection; a
        turn has two). The unit begins and ends its own transaction on it.

        What the pool's return did for each unit is done here (`tests/test_loop_units.py -k
        "kept or keep_one or leaves_its or interrupt or refused_begin or not_running"`): a
        transaction left open is rolled back (which gives the write turn back), and the
        connection is dropped (the next unit takes a new one)
        when the unit raised or left it invalidated, or when it cannot be rolled back: a
        refused BEGIN leaves SQLAlchemy's `Connection` unable to begin on its own again, and
        a write transaction left open would hold SQLite's write lock against every writer.
        A second write begun while the kept connection is lent (inside the same unit), or
        from a thread not running a unit here, gets a pooled connection of its own: a
        second write of a unit then meets the write turn its unit holds, and is refused."""
        if self._lent or self._runner != threading.get_ident():
            with self.engine.connect() as own:
                yield own
            return
        kept = self._kept
        if kept is None or kept.closed:
            kept = self._kept = self.engine.connect()
        self._lent = True
        failed = True
        try:
            yield kept
            failed = False
        finally:
            self._lent = False
            if not self._ended(kept) or failed or kept.invalidated:
                self._discard()

    def _ended(self, kept: Connection) -> bool:
        """End what a unit left open on `kept`, as the pool's return would; False when that
        failed (closed, it goes back to the pool, whose return ends it and gives the write turn
        back: the `checkin` hook of `kit/db.py`)."""
        if kept.invalidated:
            return True  # its DB-API connection is gone, and the turn with it (`invalidate`)
        try:
            if kept.in_transaction():
                kept.rollback()  # through the dialect: gives the write turn back too
            raw = kept.connection.dbapi_connection
            if raw is not None and raw.in_transaction:
                raw.rollback()
            return True
        except Exception as exc:
            log.warning("loop_connection_reset_failed", reason=str(exc)[:200])
            return False

    def _discard(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            try:
                kept.close()
            except Exception as exc:  # a dead connection: gone all the same
                log.warning("loop_connection_not_closed", reason=str(exc)[:200])

    def close(self) -> None:
        """Give the kept connection back (the database's disposal)."""
        self._discard()

    def session_factory(self, kind: str) -> sessionmaker[Session]:
        """ "write" (BEGIN IMMEDIATE), "read" (BEGIN) or "point" (no transaction) sessions, as
        `Database.session` and `Database.point_reads` give them. The point reads' connection is
        not read-only as the worker path's are (one engine here); they are reads all the same.
        Point sessions carry `point_info` (the loop's reader: `kit/loop_read.loop_reader_of`)."""
        return self._factories[kind]

    async def run_or_queue(self, work: Callable[[], T]) -> tuple[bool, T | None]:
        """`run`, and when the unit met the write turn held (by a worker of this process or by
        another process of this server), queue for the turn without blocking the loop and run
        it here with the turn. Once a unit met the turn held, the next `SHARED_PAUSE_S` of
        units queue before they start, so none does its reads twice."""
        if time.monotonic() >= self._queue_until:
            ran, result = self.run(work)
            if ran or not self._met_turn:
                return ran, result
        if time.monotonic() < self._paused_until:
            return False, None
        return await self._run_in_turn(work, self.write_turn)

    async def _run_in_turn(self, work: Callable[[], T], turn: WriteTurn) -> tuple[bool, T | None]:
        """Queue `work` for the write turn, and await its outcome. The loop answers other
        requests meanwhile; the queue's drain runs it, in the caller's context."""
        self.queued += 1
        queue = self._queue()
        done: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        queue.waiting.append(_Queued(work, contextvars.copy_context(), done))
        if queue.drain is None:
            queue.drain = asyncio.get_running_loop().create_task(self._drain(queue, turn))
        return await done

    async def _drain(self, queue: _TurnQueue, turn: WriteTurn) -> None:
        """Run the queued units in order, each in its own transaction, holding the turn from
        one to the next as long as nobody else took it in between (a worker thread waits for
        it when it is held; the loop goes on meanwhile), and letting the loop in every
        `BATCH` units. A unit cancelled while it queued is dropped; one that has waited for
        the turn longer than `wait_s` at the head of the queue fails (`PoolTimeout`, as a
        worker's would), and only it."""
        thread = threading.get_ident()
        waiting, ran = queue.waiting, 0
        try:
            while waiting:
                head = waiting[0]
                if head.deadline is None:
                    head.deadline = time.monotonic() + self.wait_s
                left = head.deadline - time.monotonic()
                if head.done.done() or left <= 0:  # its caller went away, or waited too long
                    waiting.popleft()
                    _refuse(head)
                    continue
                if not turn.lend(thread, None):
                    with anyio.CancelScope(shield=True):  # a taken turn is always given back
                        lent = await anyio.to_thread.run_sync(turn.lend, thread, left)
                    if not lent:
                        continue  # the head's time is up: refused above, the next ones wait on
                unit = waiting.popleft()
                try:
                    if not unit.done.done():  # its caller may have gone while the turn came
                        unit.done.set_result(unit.context.run(self.run, unit.work))
                except Exception as exc:  # the unit's own: its caller raises it
                    unit.done.set_exception(exc)
                except BaseException as exc:
                    unit.done.set_exception(exc)
                    raise
                finally:
                    turn.give_back()
                ran += 1
                if ran % BATCH == 0:
                    await asyncio.sleep(0)
        finally:  # left early (the loop shutting down): no caller waits forever
            queue.drain = None
            for unit in waiting:
                unit.done.cancel()
            waiting.clear()

    def _queue(self) -> _TurnQueue:
        """The running loop's queue for the write turn (its futures belong to that loop)."""
        loop = asyncio.get_running_loop()
        if self._queues is None or self._queues[0] is not loop:
            self._queues = (loop, _TurnQueue())
        return self._queues[1]

    def run(self, work: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, what `work` answered), or (False, None): run it on a worker (nothing it did
        here was committed). Exceptions other than `WouldBlock` are the unit's own."""
        self._met_turn = False
        if time.monotonic() < self._paused_until or not self._running.acquire(blocking=False):
            return False, None
        began = time.perf_counter() - COLLECTOR_TIME.seconds
        _ON_LOOP.on = True
        self._runner = threading.get_ident()
        try:
            result = work()
        except WouldBlock as blocked:
            if blocked.turn:  # queue for it on the loop (`run_or_queue`), and the next ones too
                self._met_turn = True
                self._queue_until = time.monotonic() + SHARED_PAUSE_S
            else:
                self.sent_away += 1
                if blocked.elsewhere:  # another program writes the database: let it, a while
                    self._paused_until = time.monotonic() + SHARED_PAUSE_S
            return False, None
        finally:
            _ON_LOOP.on = False
            self._runner = None
            self._running.release()
            self._after(time.perf_counter() - COLLECTOR_TIME.seconds - began)
        self.ran += 1
        return True, result

    def _after(self, took_s: float) -> None:
        """Count a unit that took `took_s` (the collector's pauses left out): pause the path
        after a stall or too many slow units, for as long as their time calls for; start a
        checkpoint every `CHECKPOINT_EVERY`."""
        took_ms = took_s * 1000
        if took_ms > SLOW_MS and self._units >= WARM_UNITS:
            now = time.monotonic()
            self._slow.append((now, took_s))
            while self._slow[0][0] < now - SLOW_WINDOW_S:
                self._slow.popleft()
            if took_ms > STALL_MS or len(self._slow) >= SLOW_UNITS:
                lost_s = sum(s for _, s in self._slow)  # the stall and the slow units before it
                seconds = self._slow_pauses.next(lost_s, now)
                self._slow.clear()
                # Never shortens a pause already running (another process's lock).
                self._paused_until = max(self._paused_until, now + seconds)
                log.warning("loop_units_paused", took_ms=round(took_ms), seconds=round(seconds, 1))
        self._units += 1
        if self._units % CHECKPOINT_EVERY == 0 and self._checkpointing.acquire(blocking=False):
            threading.Thread(target=self._checkpoint, name="sqlite-checkpoint", daemon=True).start()

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint on a connection of its own: it copies what it can of the WAL
        into the database without waiting for any reader or writer."""
        try:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:  # the next one, or a worker's commit, checkpoints
            log.warning("checkpoint_failed", reason=str(exc)[:200])
        finally:
            self._checkpointing.release()
