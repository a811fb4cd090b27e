"""SQLite's connections: WAL, the busy timeout, and the process's write turn around `BEGIN
IMMEDIATE` (why: `kit/db.py`'s docstring). The event loop's engine (`kit/loop_units.py`) never
waits: no busy timeout, and `WouldBlock` where a worker's connection would wait."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sessionary.kit.loop_units import WouldBlock
from sessionary.kit.raw_sql import run_fixed
from sessionary.kit.sqlite_wal import journal_mode_wal
from sessionary.kit.write_turn import WriteTurn

READ_ONLY_OPTION = "sessionary_read_only"
# SQLite: a point-reads session opens no transaction; each of its statements is its own.
NO_BEGIN_OPTION = "sessionary_no_begin"


def configure_sqlite(
    engine: Engine,
    busy_timeout_ms: int,
    *,
    query_only: bool,
    write_turn: WriteTurn,
    on_loop: bool = False,
) -> None:
    """`on_loop`: the engine of `kit/loop_units.py`, whose connections never wait: no busy
    timeout, no checkpoint at commit, and the write turn taken without waiting (`WouldBlock`
    otherwise, before anything is written)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below choose the kind of BEGIN, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        journal_mode_wal(cursor, 0 if on_loop else busy_timeout_ms / 1000)  # the loop never naps
        cursor.execute(f"PRAGMA busy_timeout={0 if on_loop else int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if on_loop:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        if query_only:  # for good: switching it expires every prepared statement of the connection
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    # The write turn is held from BEGIN IMMEDIATE to the transaction's end, exactly when SQLite's
    # own write lock is (so it waits wherever SQLite would have), and released by whichever
    # thread ends it: after the COMMIT or ROLLBACK has run. SQLAlchemy's "commit" and "rollback"
    # events come before it, and a turn handed over there let the next writer's BEGIN IMMEDIATE
    # meet the lock still held and nap in SQLite's busy handler (a millisecond at least;
    # `tests/test_storage.py -k after_the_commit`). At 16 clients, `/v1/responses` went from 221
    # to 237 turns a second (15 interleaved rounds; 218 to 259 in a shorter run).
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(READ_ONLY_OPTION, False):
            if not options.get(NO_BEGIN_OPTION, False):
                run_fixed(conn, "BEGIN")
            return
        raw = conn.connection.dbapi_connection
        if on_loop and write_turn.adopt(raw):  # lent to this unit while it queued (loop_units)
            holder = None
        else:
            holder = write_turn.take(raw, None if on_loop else busy_timeout_ms / 1000)
        if holder is not None:
            if on_loop:
                raise WouldBlock(
                    f"the write turn is held {holder}", elsewhere=holder != "here", turn=True
                )
            raise PoolTimeout("No write turn on the SQLite database in time.")
        try:
            run_fixed(conn, "BEGIN IMMEDIATE")
        except OperationalError as error:
            write_turn.release(raw)
            if on_loop:  # another process writes: never wait for it here
                raise WouldBlock(str(error), elsewhere=True) from error
            raise
        except BaseException:
            write_turn.release(raw)
            raise

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            write_turn.release(getattr(connection, "dbapi_connection", connection))

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            write_turn.release(getattr(connection, "dbapi_connection", connection))

    # This engine's own dialect object: its transactions end through these.
    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _error: Any) -> None:
        write_turn.release(dbapi_connection)  # its transaction is gone with it

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        write_turn.release(dbapi_connection)  # returned mid-transaction and not rolled back
