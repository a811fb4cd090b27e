"""PostgreSQL: a turn's short units of work run on the event loop itself while nothing else runs
in the process, instead of being handed to a worker thread and back.

A hand-off costs two thread wake-ups, and on a small machine whose process sat idle between
requests they cost more than the unit's own Python: running every unit on the loop in a scratch
build took `/v1/responses` at one client from 4.18 to 3.34 ms added (p50) and 0.5 ms of server
CPU off a turn (docs/BENCHMARKS.md). Under load, blocking the loop for a round trip holds every
other request of the process (awaited on the loop through asyncio, p99 at 64 clients doubled),
so a unit runs here only when nobody else is waiting for the loop.

What keeps the loop from waiting long here (the unit is run again from its start on a worker,
which waits as long as it takes, whenever it would):
- only while the process runs nothing else: no other request (a stream counts until its end)
  and no background response (`Database.work_under_way`); and one unit at a time;
- connections of their own (an engine in autocommit for point reads and single statements, one
  for transactions), whose pool opens another connection rather than wait for one, within
  `LOOP_CONNECT_TIMEOUT_S` unless the database URL sets `connect_timeout`;
- on them a lock is waited for at most `LOCK_WAIT_MS` (`lock_timeout`: rows, a unique key
  another transaction is inserting, advisory and table locks) and a statement runs for at most
  `STATEMENT_LIMIT_MS` (`statement_timeout`): past either the statement fails, having written
  nothing, as `WouldBlock`, the unit's transaction (if any) rolls back and the unit goes to a
  worker; the next `PAUSE_S` of units go straight there too, since what held it (another
  process's turn, anyone's long transaction, a busy database) is likely still there; and TCP
  keepalives and `tcp_user_timeout` (`TCP`) end the wait for a database that stopped answering;
- only a turn's units (a search's SQL can take far longer: its units keep to the workers);
- slow units (a distant database, a busy machine) turn the path off for `PAUSE_S`: there, a
  round trip costs more than the hand-off saves. Slow is, among the last `SLOW_AMONG` units,
  `SLOW_UNITS` over `SLOW_MS`, or slow ones that took more than `STALL_MS` in all (one stall
  is enough); a process's first `WARM_UNITS` open their connections and compile their
  statements, and do not count. A single unit over `SLOW_MS` used to turn it off: a commit
  that waited about 50 ms for the disk, once in some 6,000 units on a 2-core machine at one
  client, sent the next 5 s of units (over a thousand turns) to the workers, two hand-offs a
  turn. Counted alone, three slow units among 100 let a unit of 190 ms every 50th stall the
  loop for good; their sum does not (`tests/test_pg_loop_units.py -k "slow or what_pauses"`).

So a unit given here must be safe to run again from its start on a worker: the contract of
SQLite's loop units (`kit/loop_units.py`, `Database.in_worker(loop_ok=True)`), which already
holds for every unit given them. Tests: `tests/test_pg_loop_units.py`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, event

from sessionary.kit.heap import COLLECTOR_TIME
from sessionary.kit.loop_units import WouldBlock, running_here, running_on_the_loop

log = structlog.get_logger("sessionary.db")

T = TypeVar("T")

LOCK_WAIT_MS = 50
LOOP_CONNECT_TIMEOUT_S = 5  # a connection opened here (the first, or after a restart)
SLOW_MS = 20.0
SLOW_UNITS = 3
SLOW_AMONG = 100
STALL_MS = 150.0  # the slow units' time among the last `SLOW_AMONG` that pauses the path
PAUSE_S = 5.0
WARM_UNITS = 20  # a process's first units open connections and compile statements: not slow
STATEMENT_LIMIT_MS = 250
# What the loop's connections give up on: a lock wait past `lock_timeout`, a statement past
# `statement_timeout` (SQLSTATEs). Either way the statement wrote nothing.
GIVEN_UP = {"55P03": "a row lock held elsewhere", "57014": "a statement past its time"}
# libpq's TCP settings for these connections, unless the database URL sets them: a database that
# stops answering (a failover, a dropped network) ends the wait in seconds, not at TCP's own
# limit (about 15 minutes), since the loop waits with it.
TCP = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1, "keepalives_count": 3,
       "tcp_user_timeout": 5000}  # fmt: skip


def waits_briefly(engine: Engine) -> None:
    """Set up one of these engines' connections: `lock_timeout` and `statement_timeout` for
    good, and a statement they ended raised as `WouldBlock` (on SQLAlchemy's path here;
    `raw_sql`'s does the same)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {LOCK_WAIT_MS}")
            cursor.execute(f"SET statement_timeout = {STATEMENT_LIMIT_MS}")
        if not dbapi_connection.autocommit:
            dbapi_connection.commit()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        blocked = given_up(context.original_exception)
        if blocked is not None:
            raise blocked from context.original_exception


def given_up(error: BaseException) -> WouldBlock | None:
    """`WouldBlock` for a driver error that is one of these connections giving up (`GIVEN_UP`)
    in a unit running on the loop, else None: elsewhere (a worker, where the database's own
    `lock_timeout` may end a wait) the error stays what it was."""
    reason = GIVEN_UP.get(getattr(error, "sqlstate", None) or "")
    if reason is None or not running_here():
        return None
    return WouldBlock(reason, elsewhere=True)


class PgLoopUnits:
    """Runs a unit on the loop when it may (`run`), whose sessions `Database` makes on these two
    engines (`point_engine` in autocommit, `write_engine` for transactions)."""

    def __init__(
        self,
        point_engine: Engine,
        write_engine: Engine,
        work_under_way: Callable[[], int],
    ) -> None:
        self.point_engine = point_engine
        self.write_engine = write_engine
        self.work_under_way = work_under_way
        self._running = threading.Lock()
        self._paused_until = 0.0
        self.ran = 0
        self.sent_away = 0  # units that would have waited: run again on a worker
        self._started = 0  # units begun here
        # the slow ones among the last `SLOW_AMONG`: (which, how many ms)
        self._slow: deque[tuple[int, float]] = deque()

    def run(self, work: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, what `work` answered), or (False, None): run it on a worker (nothing it did
        here was committed). Exceptions other than `WouldBlock` are the unit's own."""
        if self.work_under_way() > 1 or time.monotonic() < self._paused_until:
            return False, None
        if not self._running.acquire(blocking=False):  # another event loop's unit
            return False, None
        began = time.perf_counter() - COLLECTOR_TIME.seconds
        try:
            with running_on_the_loop():
                result = work()
        except WouldBlock as blocked:
            self.sent_away += 1
            if blocked.elsewhere:  # what held it (a lock's holder, the database) is busy still
                self._paused_until = time.monotonic() + PAUSE_S
            return False, None
        finally:
            self._after((time.perf_counter() - COLLECTOR_TIME.seconds - began) * 1000)
            self._running.release()  # after: `_after`'s count is the running thread's own
        self.ran += 1
        return True, result

    def _after(self, took_ms: float) -> None:
        """Count a unit that took `took_ms`: pause the path after too many slow units among the
        last few, or too long a time in them."""
        self._started += 1
        if took_ms <= SLOW_MS or self._started <= WARM_UNITS:
            return
        slow = self._slow
        slow.append((self._started, took_ms))
        while slow[0][0] <= self._started - SLOW_AMONG:
            slow.popleft()
        if len(slow) >= SLOW_UNITS or sum(ms for _, ms in slow) > STALL_MS:
            slow.clear()
            self._paused_until = max(self._paused_until, time.monotonic() + PAUSE_S)
            log.warning("pg_loop_units_paused", took_ms=round(took_ms), seconds=PAUSE_S)

    def dispose(self) -> None:
        self.point_engine.dispose()
        self.write_engine.dispose()
