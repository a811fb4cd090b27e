"""Engines, sessions and the request-scoped transaction.

SQLite is the embedded default: WAL so readers never block the writer, a busy timeout so writers
queue instead of failing, and `BEGIN IMMEDIATE` for write transactions so two writers never both
read and then deadlock on the upgrade to a write lock. Read-only sessions use a plain deferred
`BEGIN`, and point reads (`Database.point_reads`) none at all. Both are sent on the DB-API
cursor, as are savepoints (`fixed_savepoints`): through SQLAlchemy's execution path they
cost 20-40 µs each, several times a turn. Within one process, write transactions also hold a
lock from `BEGIN IMMEDIATE` to their end: SQLite's busy handler sleeps and polls (up to 100 ms a
nap), so under load a writer could sleep long after the database was free (p99 above a second at
16 clients); a lock hands over at once. Processes of this server take turns on a file lock
beside the database (`write_turn.FileTurn`); other programs still meet SQLite's busy handler. A
SQLite write transaction holds the database's one write lock until it ends, so code must never
open a second write session while its own request's write transaction is open.

PostgreSQL needs none of this. Its pool pings a connection at checkout when it has sat unused
for a tenth of a second or more (`_configure_postgres`), so a server restarted while the pool
sat idle is reconnected transparently; under steady traffic, where a pooled connection is back
in use within milliseconds, nobody pays the ping's round trip. The hot paths' few point reads
(a key check, a turn's plan, a search's template) run in autocommit (`Database.point_reads`):
under READ COMMITTED every statement reads its own snapshot anyway, so a `BEGIN` and `COMMIT`
around them bought nothing but two round trips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from sessionary.config import Settings
from sessionary.kit.async_read import AsyncReader
from sessionary.kit.loop_read import LOOP_READER, LoopReader
from sessionary.kit.loop_units import LoopUnits, WouldBlock, running_here
from sessionary.kit.notified import KEEPS, NOTIFIED, NotifiedCache
from sessionary.kit.pg_loop_units import LOOP_CONNECT_TIMEOUT_S, TCP, PgLoopUnits, waits_briefly
from sessionary.kit.raw_sql import (
    HeldInserts,
    holding_inserts,
    keep_long_conversions,
    run_fixed,
    send_held_first,
)
from sessionary.kit.sqlite_engine import NO_BEGIN_OPTION, READ_ONLY_OPTION, configure_sqlite
from sessionary.kit.unit_threads import UnitThreads
from sessionary.kit.wal_flush import GroupFlush
from sessionary.kit.write_turn import WriteTurn

T = TypeVar("T")

# Units of work that may wait on a model (`Database.in_worker(waits_elsewhere=True)`) at once:
# as many as anyio's default limiter allows, but tokens of their own.
WAITING_THREADS = 40
# Point reads: read-only, and on SQLite no transaction at all (`Database.point_reads`).
POINT_OPTIONS: dict[str, Any] = {READ_ONLY_OPTION: True, NO_BEGIN_OPTION: True}


# A pooled PostgreSQL connection unused for this long is pinged before it is handed out. At 1 s,
# backends killed 0.2-0.5 s before the next request still cost that request a 503; a restart
# takes longer than this, and a busy pool reuses a connection within milliseconds.
PING_AFTER_IDLE_S = 0.1
_IDLE_SINCE = "sessionary_idle_since"


def _configure_postgres(engine: Engine) -> None:
    """Ping at checkout only a connection that has been idle: what `pool_pre_ping` does on every
    checkout (a round trip each) for the case it exists for, a server that went away while the
    connection sat in the pool. A failed ping renews the whole pool (its other connections are
    gone too) and the checkout is retried on a new one; a connection that dies while in use
    fails that request with a 503, and SQLAlchemy renews the pool then
    (`tests/test_postgres_restart.py`). Also `kit/raw_sql.py`'s hook and psycopg's limits."""
    dialect = engine.dialect
    event.listen(engine, "before_cursor_execute", send_held_first)  # held INSERTs go first
    keep_long_conversions()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            raise InvalidatePoolError(str(error)) from error


def fixed_savepoints(engine: Engine) -> None:
    """Savepoint statements sent as text on the DB-API cursor. SQLAlchemy compiles a new
    `SavepointClause` for each (its name varies, so its compiled cache never holds it): about
    20 µs for each of the two or three a stored turn runs (`begin_nested` around its
    transcript). Same statements, same error translation (`kit/raw_sql.run_fixed`)."""
    dialect = engine.dialect
    quote = dialect.identifier_preparer.quote

    def do_savepoint(connection: Any, name: str) -> None:
        run_fixed(connection, f"SAVEPOINT {quote(name)}")

    def do_release_savepoint(connection: Any, name: str) -> None:
        run_fixed(connection, f"RELEASE SAVEPOINT {quote(name)}")

    def do_rollback_to_savepoint(connection: Any, name: str) -> None:
        run_fixed(connection, f"ROLLBACK TO SAVEPOINT {quote(name)}")

    dialect.do_savepoint = do_savepoint  # type: ignore[method-assign]
    dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint  # type: ignore[method-assign]


def _sqlite_file(settings: Settings) -> str | None:
    """The SQLite database's file (None: PostgreSQL, or a database in memory)."""
    url = settings.sqlalchemy_url
    if not url.startswith("sqlite"):
        return None
    database = url.split("///", 1)[-1].split("?", 1)[0]
    return database if database and database != ":memory:" else None


def make_engine(
    settings: Settings,
    *,
    autocommit: bool = False,
    write_turn: WriteTurn | None = None,
    on_loop: bool = False,
) -> Engine:
    """The engine for `settings`' database. `autocommit`: one whose statements run without a
    transaction, for `Database.point_reads` and `single_statements`: on SQLite its connections
    are read-only for good (`PRAGMA query_only`: a write there would commit at once, outside
    the write turn, and is refused instead); on PostgreSQL they are in autocommit for good
    (switching a pooled connection there and back at each checkout cost 60-80 µs of CPU, a
    unit of work's third). SQLite: `write_turn`, the process's turn its writers share
    (`Database`'s engines). `on_loop`: an engine for units on the event loop, which never
    waits (its pool opens another connection rather than wait for one; on SQLite,
    `kit/loop_units.py`), or not long (PostgreSQL, `kit/pg_loop_units.py`)."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        database = _sqlite_file(settings)
        if database is not None:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": settings.sqlite_busy_timeout_ms / 1000,
            },
            pool_size=2 if on_loop else settings.db_pool_size,
            max_overflow=-1 if on_loop else settings.db_max_overflow,
            hide_parameters=True,  # error messages and logs never carry request data
        )
        configure_sqlite(
            engine,
            settings.sqlite_busy_timeout_ms,
            query_only=autocommit,
            write_turn=write_turn or WriteTurn(),
            on_loop=on_loop,
        )
        fixed_savepoints(engine)
        return engine
    connect: dict[str, Any] = {}
    if on_loop:  # libpq's defaults: no limit to a connect, TCP's own to a silent server
        given = make_url(url).query
        limits = {"connect_timeout": LOOP_CONNECT_TIMEOUT_S, **TCP}
        connect = {k: v for k, v in limits.items() if k not in given}
    engine = create_engine(
        url,
        pool_size=2 if on_loop else settings.db_pool_size,
        max_overflow=-1 if on_loop else settings.db_max_overflow,
        hide_parameters=True,  # error messages and logs never carry request data
        isolation_level="AUTOCOMMIT" if autocommit else None,
        connect_args=connect,
    )
    _configure_postgres(engine)
    if on_loop:
        waits_briefly(engine)
    fixed_savepoints(engine)
    return engine


def _factories(
    engine: Engine, point_engine: Engine, told: dict[str, Any]
) -> dict[str, sessionmaker[Session]]:
    """A database's four kinds of sessions, on its engine and its engine in autocommit. A closed
    session refuses reuse: touching it after its block would otherwise check out a connection
    that nothing returns to the pool (found under load, not in review)."""
    options = {"expire_on_commit": False, "close_resets_only": False}
    return {
        "write": sessionmaker(engine, info=told, **options),
        "read": sessionmaker(
            engine.execution_options(**{READ_ONLY_OPTION: True}), info=told, **options
        ),
        "single": sessionmaker(point_engine, info=told, **options),
        # reads of committed rows only: they may be kept
        "point": sessionmaker(
            point_engine.execution_options(**POINT_OPTIONS), info={**told, KEEPS: True}, **options
        ),
    }


class Database:
    """A database's engines and its sessions: writers (BEGIN IMMEDIATE on SQLite), readers, point
    reads and single statements, and those of units on the event loop (`kit/loop_units.py`,
    `kit/pg_loop_units.py`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        write_turn = self.write_turn = WriteTurn(_sqlite_file(settings))
        self.engine = make_engine(settings, write_turn=write_turn)
        self.dialect = self.engine.dialect.name
        self.loop_reads = LoopReader(self.engine)  # SQLite
        self.async_reads = AsyncReader(self.engine, settings.db_threads)  # PostgreSQL
        # Keys and prompts kept until a change is notified (PostgreSQL; `start_listening`)
        self.notified = NotifiedCache(self.engine, settings.auth_cache_seconds)
        told = {NOTIFIED: self.notified}
        self._units = UnitThreads(settings.db_threads, "sessionary-db")
        self._waiting: tuple[asyncio.AbstractEventLoop, CapacityLimiter] | None = None
        # Connections of their own, with no transaction for good (`make_engine`)
        self._point_engine = make_engine(settings, autocommit=True)
        self._factories = _factories(self.engine, self._point_engine, told)
        # How many requests and background responses this process runs (the app's; none
        # outside one)
        self.work_under_way: Callable[[], int] = lambda: 0
        self.pg_loop: PgLoopUnits | None = None  # PostgreSQL: units on the loop, when alone
        self._loop_factories = self._factories
        if self.dialect == "postgresql":
            self.pg_loop = PgLoopUnits(
                make_engine(settings, autocommit=True, on_loop=True),
                make_engine(settings, on_loop=True),
                lambda: self.work_under_way(),
            )
            self._loop_factories = _factories(
                self.pg_loop.write_engine, self.pg_loop.point_engine, told
            )
        self.group_flush = GroupFlush(self.engine)  # a turn's end and the WAL flush
        self.loop_units: LoopUnits | None = None  # SQLite in a file: units run on the loop
        if self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            self.loop_units = LoopUnits(
                make_engine(settings, write_turn=write_turn, on_loop=True),
                read_options={READ_ONLY_OPTION: True},
                point_options=POINT_OPTIONS,
                write_turn=write_turn,
                wait_s=settings.sqlite_busy_timeout_ms / 1000,
                point_info={LOOP_READER: self.loop_reads},
            )

    def _factory(self, kind: str) -> sessionmaker[Session]:
        """Sessions of `kind` ("write", "read", "point", "single"): on PostgreSQL, a unit
        running on the loop gets its engines' (`kit/pg_loop_units.py`)."""
        if self.pg_loop is not None and running_here():
            return self._loop_factories[kind]
        return self._factories[kind]

    def session(
        self, *, write: bool = True, durable: bool = True
    ) -> AbstractContextManager[Session]:
        """A unit of work: commit when the block succeeds, roll back when it raises.

        `durable=False`: on PostgreSQL the commit does not wait for the WAL to reach the disk
        (`SET LOCAL synchronous_commit = off`, this transaction only; atomicity, locks and
        visibility are unchanged). Only for writes that a database crash may lose harmlessly:
        a hold (lost, it is as if it had expired; the charge that settles it is durable). On
        SQLite every commit is already like this (WAL with `synchronous=NORMAL`)."""
        if self.loop_units is not None and running_here():
            if write:
                return self._loop_write(durable)
            return self._unit_of_work(self.loop_units.session_factory("read"), durable)
        return self._unit_of_work(self._factory("write" if write else "read"), durable)

    @contextmanager
    def _loop_write(self, durable: bool) -> Iterator[Session]:
        """A write session on the loop, bound to the loop's kept connection
        (`LoopUnits.connection`): it begins and ends the transaction there."""
        assert self.loop_units is not None
        factory = self.loop_units.session_factory("write")
        with (
            self.loop_units.connection() as connection,
            self._unit_of_work(lambda: factory(bind=connection), durable) as db,
        ):
            yield db

    def point_reads(self) -> AbstractContextManager[Session]:
        """A read-only session for a few short reads on a hot path, in autocommit: no
        `BEGIN`/`COMMIT` (on PostgreSQL two round trips), and each statement reads its own
        snapshot, as it would under PostgreSQL's READ COMMITTED inside a transaction. Not for
        server-side cursors (`yield_per`) or `SET LOCAL`, which need a transaction: use
        `session(write=False)`. Never for writes, which would commit at once: on SQLite these
        sessions have read-only connections of their own, which refuse them; PostgreSQL's
        autocommit does not."""
        factory = self._factory("point")
        if self.loop_units is not None and running_here():
            factory = self.loop_units.session_factory("point")
        return self._unit_of_work(factory, durable=True, reads_only=True)

    def single_statements(self) -> AbstractContextManager[Session]:
        """PostgreSQL: a write session in autocommit, for work that is one statement (atomic on
        its own): no `BEGIN` and `COMMIT` round trips (a turn's end, `kit/at_once.py`)."""
        if self.dialect != "postgresql":
            raise RuntimeError("single_statements is for PostgreSQL")
        return self._unit_of_work(self._factory("single"), durable=True)

    @contextmanager
    def one_statement(self) -> Iterator[Connection]:
        """PostgreSQL: `single_statements` with no ORM session (`Ledger.reserve_on`), whose
        own bookkeeping around a statement cost about 130 µs of CPU, twice the statement's."""
        if self.dialect != "postgresql":
            raise RuntimeError("one_statement is for PostgreSQL")
        engine = self._point_engine
        if self.pg_loop is not None and running_here():
            engine = self.pg_loop.point_engine
        with engine.begin() as connection:
            yield connection

    @contextmanager
    def bare_write(self) -> Iterator[Connection]:
        """SQLite: a write transaction on a bare connection, no ORM session around it (a turn's
        hold, `Ledger.reserve_on`: the session's bookkeeping cost 77 µs of a hold's 381 on the
        loop), on the loop's engine when the unit runs there. Commits, or rolls back on a raise."""
        if self.dialect != "sqlite":
            raise RuntimeError("bare_write is for SQLite")
        units = self.loop_units
        if units is None or not running_here():
            with self.engine.begin() as connection:
                yield connection
            return
        with units.connection() as connection, connection.begin():
            yield connection

    def commit_apart(
        self, part: Callable[[Session], None], rest: Callable[[Session], T]
    ) -> tuple[T, Exception | None]:
        """`part`, then `rest`, in one write transaction; when `part` fails, the transaction
        rolls back and `rest` commits alone in a new one, and `part`'s error is returned for
        the caller to log (a turn's charge, when its transcript cannot be stored). When the
        failure took the connection with it (the server went away), the error is raised
        instead: the caller must not answer as if `rest` had committed with it
        (`tests/test_turn_commit.py`).

        On PostgreSQL `part`'s plain INSERTs are held back and go out together, as one
        statement, right before `rest`'s first statement (`kit/raw_sql.holding_inserts`): a
        turn's transcript is one statement where it was four. Sending them failing counts as
        `part` failing: `rest` then runs again, alone. A turn on a new session first tries its
        whole end as one statement in autocommit (`kit/at_once.py`); this is where it goes
        when that was not possible or failed, with nothing written.

        A savepoint around `part` did this with two statements more on every call (on
        PostgreSQL two round trips: 0.2 to 0.4 ms of a turn, in-process); a second
        transaction costs only when `part` fails."""
        held: HeldInserts | None = None
        with self.session() as db:
            connection = db.connection()
            in_rest = False
            try:
                with holding_inserts(connection) as held:
                    part(db)
                    in_rest = True
                    return rest(db), None
            except WouldBlock:  # the whole unit moves to a worker (`kit/loop_units.py`)
                raise
            except Exception as exc:
                if connection.invalidated or (in_rest and not (held and held.failed)):
                    raise  # `rest`'s own failure (or the server's): the unit fails whole
                db.rollback()  # `rest` then begins the session's next transaction
                return rest(db), exc

    @contextmanager
    def _unit_of_work(
        self, factory: Callable[[], Session], durable: bool, reads_only: bool = False
    ) -> Iterator[Session]:
        """`reads_only`: nothing to commit, closing ends it (a commit cost 20-25 µs of CPU, a
        point-reads session's half); a change left in the session is an error, never lost."""
        with factory() as db:
            try:
                if not durable and self.dialect == "postgresql":
                    db.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield db
                if not reads_only:
                    db.commit()
                elif db.new or db.dirty or db.deleted:
                    raise RuntimeError("point_reads never writes")
            except BaseException:
                db.rollback()
                raise

    async def in_worker(
        self, work: Callable[[], T], *, waits_elsewhere: bool = False, loop_ok: bool = False
    ) -> T:
        """Run `work` (short units of work: a turn's plan and hold, its settle, a search's
        reads and charge, a key check) in a worker thread, at most `db_threads` at once.

        `loop_ok`: `work` runs on the event loop itself when it can without waiting (SQLite:
        `kit/loop_units.py`), and on a worker, from its start, when it cannot. Only for work
        with at most one write transaction and nothing before it that must not run twice, whose
        calls to the loop (a model's) go through `loop_units.from_worker`.

        `waits_elsewhere`: `work` may wait on something slow outside the database (a local
        model's tokenizer, queued behind that model's generations; a search's query, queued
        behind an ingestion's batches): it then runs under a limiter of its own, up to
        `WAITING_THREADS` at once, so it never holds one of these few threads while it waits,
        nor one of the tokens of anyio's default limiter, which FastAPI's `def` routes and
        dependencies take (`tests/test_storage.py -k db_threads`).

        Units run on threads of their own, `db_threads` at most (`kit/unit_threads.py`):
        anyio's default pool lets 40 threads run at once, and past a few they only contend for
        the GIL (and on SQLite for its one write lock, on PostgreSQL for the same two cores): in
        `python -m bench --only gateway`, `/v1/responses` at 64 clients on one worker went from
        225 to 259 req/s on SQLite and from 127 to 166 on PostgreSQL with 4. Long work (an
        ingestion's store, model loading) keeps anyio's default pool, so it never holds these
        threads. Cancellation is as with anyio: a caller cancelled by a cancel scope once
        `work` has begun waits for its end and gets its answer; a unit whose caller is
        cancelled before it began (waiting for a thread, or queued on the loop for SQLite's
        write turn) never runs.

        On PostgreSQL `loop_ok` units run on the loop only while the process runs nothing
        else, and give up for a worker a lock wait past 50 ms or a statement past 250 ms
        (`kit/pg_loop_units.py`); otherwise on a worker: awaited on the loop under load
        (psycopg's asyncio connections through SQLAlchemy's greenlet bridge) p99 at 64 clients
        doubled (docs/BENCHMARKS.md)."""
        if loop_ok and self.loop_units is not None:
            ran, result = await self.loop_units.run_or_queue(work)
            if ran:
                return result  # type: ignore[return-value]  # what `work` answered
        elif loop_ok and self.pg_loop is not None:
            ran, result = self.pg_loop.run(work)
            if ran:
                return result  # type: ignore[return-value]  # what `work` answered
        if waits_elsewhere:
            return await anyio.to_thread.run_sync(work, limiter=self._waiting_limiter())
        return await self._units.run(work)

    def _waiting_limiter(self) -> CapacityLimiter:
        """This event loop's limiter for work that may wait on a model (a limiter belongs to
        the loop it was first used in)."""
        loop = asyncio.get_running_loop()
        if self._waiting is None or self._waiting[0] is not loop:
            self._waiting = (loop, CapacityLimiter(WAITING_THREADS))
        return self._waiting[1]

    def ping(self) -> None:
        with self.session(write=False) as db:
            db.execute(text("SELECT 1"))

    def start_listening(self) -> None:
        """Keep keys and prompts from now on (`kit/notified.py`): a server's, not a command's."""
        self.notified.start()

    def dispose(self) -> None:
        self.notified.stop()
        self._units.close()
        self.write_turn.close()
        self.loop_reads.close()
        self.async_reads.close()
        self.engine.dispose()
        if self.loop_units is not None:
            self.loop_units.close()
            self.loop_units.engine.dispose()
        self._point_engine.dispose()
        if self.pg_loop is not None:
            self.pg_loop.dispose()
