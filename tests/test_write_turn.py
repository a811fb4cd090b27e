"""SQLite's write turn among processes (`kit/write_turn.FileTurn`): an exclusive lock on a file
beside the database, held exactly as long as a write transaction of this server, waited for
without SQLite's busy-handler naps, and gone with a process that dies holding it. Two
`Database` objects on one file stand for two processes: their descriptors are distinct, as two
processes' are."""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.write_turn import FileTurn

pytestmark = pytest.mark.skipif(not FileTurn.supported(), reason="flock: not on this system")


@pytest.fixture
def sqlite_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has row locks, not one write lock")


@pytest.fixture
def other(sqlite_only: None, settings: Settings) -> Iterator[Database]:
    """Another process's server on the same database file."""
    database = Database(settings)
    yield database
    database.dispose()


def _turn_file(db: Database) -> str:
    return f"{db.engine.url.database}.writeturn"


def _held_elsewhere(path: str) -> bool:
    """Whether some descriptor holds the file's lock (tried from a descriptor of our own)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops the lock if it was taken
    return False


def test_the_file_turn_is_held_exactly_during_a_write_transaction(
    db: Database, sqlite_only: None
) -> None:
    with db.session(write=False) as session:  # a read takes nothing
        session.execute(text("SELECT 1"))
        assert not _held_elsewhere(_turn_file(db))
    with db.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        assert _held_elsewhere(_turn_file(db))
    assert not _held_elsewhere(_turn_file(db))
    with pytest.raises(RuntimeError), db.session() as session:  # a rollback gives it back too
        session.execute(text("INSERT INTO t VALUES (1)"))
        assert _held_elsewhere(_turn_file(db))
        raise RuntimeError("rolled back")
    assert not _held_elsewhere(_turn_file(db))


def test_a_writer_of_another_process_waits_for_the_turn_then_writes(
    db: Database, other: Database
) -> None:
    """Its write starts after the holder's commit, never inside it, and both rows land."""
    with db.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
    order: list[str] = []
    holding = threading.Event()

    def hold() -> None:
        with db.session() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            time.sleep(0.3)
            order.append("first commits")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    with other.session() as session:
        session.execute(text("INSERT INTO t VALUES (2)"))  # its BEGIN waits for the turn
        order.append("second writes")
    holder.join()
    assert order == ["first commits", "second writes"]
    with db.session(write=False) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 2


def _table(db: Database) -> None:
    with db.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))


def _rows(db: Database) -> list[int]:
    with db.session(write=False) as session:
        return list(session.execute(text("SELECT x FROM t ORDER BY rowid")).scalars())


def _hold(db: Database, seconds: float, value: int = 1) -> tuple[threading.Thread, list[str]]:
    """A write transaction of `db` (another process) holding the turn for `seconds`, started
    before this returns; `order` gets "held" when it commits."""
    order: list[str] = []
    holding = threading.Event()

    def hold() -> None:
        with db.session() as session:
            session.execute(text(f"INSERT INTO t VALUES ({value})"))
            holding.set()
            time.sleep(seconds)
            order.append("held")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    return holder, order


def _insert(database: Database, value: int, order: list[str] | None = None) -> Callable[[], int]:
    def write() -> int:
        with database.session() as session:
            session.execute(text(f"INSERT INTO t VALUES ({value})"))
        if order is not None:
            order.append(f"wrote {value}")
        return value

    return write


def test_the_loop_never_waits_for_another_process_turn(db: Database, other: Database) -> None:
    """A unit on the loop finds the turn held elsewhere: not run, and no wait (`run`). Queued
    instead (`run_or_queue`): a worker thread waits for the turn while the loop goes on, and
    the unit runs on the loop once the other process has committed, after its write."""
    units = other.loop_units
    assert units is not None
    _table(db)
    holder, order = _hold(db, 0.4)
    began = time.monotonic()
    assert units.run(_insert(other, 2)) == (False, None)
    assert time.monotonic() - began < 0.1

    async def queued() -> tuple[tuple[bool, object], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            return await units.run_or_queue(_insert(other, 2, order)), ticks
        finally:
            ticker.cancel()

    ran_before = units.ran
    outcome, ticks = asyncio.run(queued())
    holder.join()
    assert outcome == (True, 2) and units.ran == ran_before + 1 and units.queued == 1
    assert ticks >= 10  # the loop went on through the wait (0.4 s, a tick every 10 ms)
    assert order == ["held", "wrote 2"] and _rows(db) == [1, 2]
    assert not _held_elsewhere(_turn_file(db))  # given back after the unit's commit


def test_a_wait_for_the_turn_past_the_busy_timeout_fails_and_takes_nothing(
    db: Database, other: Database
) -> None:
    """The turn held longer than `wait_s`: the queued unit fails as a worker's would
    (`PoolTimeout`, answered 503), never runs, and leaves the turn free behind it."""
    units = other.loop_units
    assert units is not None
    units.wait_s = 0.2
    _table(db)
    holder, _ = _hold(db, 0.8)
    with pytest.raises(PoolTimeout):
        asyncio.run(units.run_or_queue(_insert(other, 2)))
    holder.join()
    assert _rows(db) == [1]
    assert not _held_elsewhere(_turn_file(db))
    assert asyncio.run(units.run_or_queue(_insert(other, 3))) == (True, 3)
    assert _rows(db) == [1, 3]


def test_each_queued_unit_waits_its_own_busy_timeout(db: Database, other: Database) -> None:
    """A unit that came late behind a held turn is not refused with the one that has waited the
    whole busy timeout: its own wait for the turn starts when it reaches the head of the
    queue, and it runs once the turn is free within it."""
    units = other.loop_units
    assert units is not None
    units.wait_s = 0.5
    _table(db)

    async def scenario() -> list[object]:
        units.run(_insert(other, 0))  # meets the held turn: the next units queue
        first = asyncio.create_task(units.run_or_queue(_insert(other, 2)))
        await asyncio.sleep(0.35)
        late = asyncio.create_task(units.run_or_queue(_insert(other, 3)))
        return await asyncio.gather(first, late, return_exceptions=True)

    began = time.monotonic()  # before the hold's 0.7 s begin, not after them (a flake)
    holder, _ = _hold(db, 0.7)
    first, late = asyncio.run(scenario())
    holder.join()
    assert isinstance(first, PoolTimeout)
    assert late == (True, 3)
    assert time.monotonic() - began >= 0.7  # it ran after the holder, not at the first refusal
    assert _rows(db) == [1, 3]
    assert not _held_elsewhere(_turn_file(db))


def test_a_long_queue_of_this_process_refuses_nobody(db: Database, other: Database) -> None:
    """Thirty units queued behind a short hold take longer together than the busy timeout; none
    is refused for waiting behind its own process's units (a worker's wait for a thread
    counts for nothing either), only a wait for the turn itself would be."""
    units = other.loop_units
    assert units is not None
    units.wait_s = 0.2
    _table(db)

    def slow(value: int) -> Callable[[], int]:
        def write() -> int:
            time.sleep(0.02)
            return _insert(other, value)()

        return write

    async def scenario() -> list[object]:
        units.run(_insert(other, 0))  # meets the held turn: the next units queue
        calls = [units.run_or_queue(slow(value)) for value in range(2, 32)]
        return await asyncio.gather(*calls, return_exceptions=True)

    holder, _ = _hold(db, 0.05)
    began = time.monotonic()
    outcomes = asyncio.run(scenario())
    holder.join()
    assert time.monotonic() - began > 0.5  # the queue took longer than the busy timeout
    assert outcomes == [(True, value) for value in range(2, 32)]
    assert _rows(db) == [1, *range(2, 32)]


def test_queued_units_run_in_order_each_on_its_own(db: Database, other: Database) -> None:
    """Units queued behind the turn run in the order they came, each in its own transaction
    and in its caller's context: one that raises fails its caller only, and one whose caller
    went away while it queued never runs."""
    units = other.loop_units
    assert units is not None
    _table(db)
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
    seen: list[tuple[int, str]] = []

    def unit(value: int) -> Callable[[], int]:
        def write() -> int:
            seen.append((value, caller.get()))
            if value == 3:
                with other.session() as session:  # rolled back with the error
                    session.execute(text("INSERT INTO t VALUES (3)"))
                    raise ValueError("the unit's own error")
            return _insert(other, value)()

        return write

    async def call(value: int) -> tuple[bool, object]:
        caller.set(f"caller {value}")
        return await units.run_or_queue(unit(value))

    async def scenario() -> list[object]:
        units.run(unit(0))  # meets the held turn: the next units queue before they start
        tasks = [asyncio.create_task(call(value)) for value in (2, 3, 4, 5)]
        await asyncio.sleep(0.05)
        tasks[2].cancel()  # caller 4 goes away while its unit queues
        return await asyncio.gather(*tasks, return_exceptions=True)

    holder, _ = _hold(db, 0.3)
    outcomes = asyncio.run(scenario())
    holder.join()
    assert outcomes[0] == (True, 2) and outcomes[3] == (True, 5)
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert seen == [(0, ""), (2, "caller 2"), (3, "caller 3"), (5, "caller 5")]
    assert _rows(db) == [1, 2, 5]
    assert not _held_elsewhere(_turn_file(db))


def test_a_process_that_dies_holding_the_turn_frees_it(
    db: Database, sqlite_only: None, settings: Settings
) -> None:
    """Killed mid-transaction (SIGKILL: nothing of it runs), its lock goes with it: the next
    write here proceeds, and finds nothing of the dead transaction."""
    with db.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sqlalchemy import text\n"
        "from sessionary.config import Settings\n"
        "from sessionary.kit.db import Database\n"
        f"db = Database(Settings(data_dir=Path({str(settings.data_dir)!r}), "
        f"database_url={settings.database_url!r}, log_level='WARNING', preload_models=False))\n"
        "with db.session() as session:\n"
        "    session.execute(text('INSERT INTO t VALUES (99)'))\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        assert _held_elsewhere(_turn_file(db))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert not _held_elsewhere(_turn_file(db))
        with db.session() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        with db.session(write=False) as session:
            assert session.execute(text("SELECT x FROM t")).scalars().all() == [1]
    finally:
        if child.poll() is None:
            child.kill()
