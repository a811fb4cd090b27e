"""SQLite's write turn among processes (`kit/loop_units.FileTurn`): an exclusive lock on a file
beside the database, held exactly as long as a write transaction of this server, waited for
without SQLite's busy-handler naps, and gone with a process that dies holding it. Two
`Database` objects on one file stand for two processes: their descriptors are distinct, as two
processes' are."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.loop_units import FileTurn

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


def test_the_loop_never_waits_for_another_process_turn(db: Database, other: Database) -> None:
    """A unit on the loop finds the turn held elsewhere: not run, no wait, and the next units
    go to a worker for a while (`SHARED_PAUSE_S`)."""
    units = other.loop_units
    assert units is not None
    with db.session() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))

    def write() -> int:
        with other.session() as session:
            session.execute(text("INSERT INTO t VALUES (3)"))
        return 1

    with db.session() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        began = time.monotonic()
        assert units.run(write) == (False, None)
        assert time.monotonic() - began < 0.1
        assert units.run(lambda: 2) == (False, None)  # paused: the path is off for a while
    with other.session() as session:  # on a worker: the turn is free again
        session.execute(text("INSERT INTO t VALUES (4)"))


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
