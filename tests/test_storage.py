"""The schema and transactions behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from ulid_transform import ulid_to_timestamp

import sessionary.kit.ids as ids_module
from sessionary.accounts.service import AccountService
from sessionary.config import Settings
from sessionary.kit.db import Database, make_engine
from sessionary.kit.ids import new_id
from sessionary.kit.migrate import current_revision, head_revision, upgrade


def test_migrations_reach_head_and_rerun_as_a_no_op(db: Database) -> None:
    assert current_revision(db) == head_revision()
    upgrade(db)
    assert current_revision(db) == head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert {"accounts", "api_keys", "alembic_version"} <= tables


def test_the_ledger_keeps_only_the_indexes_its_reads_use(db: Database) -> None:
    """Every ledger insert (three a turn) writes each of its indexes: after 0016 the ledger has
    its key and the two indexes its listings read (by account, by owner), on both engines, and
    the models declare no more than that."""
    from sessionary.billing.models import LedgerEntry

    built = {index["name"] for index in inspect(db.engine).get_indexes("credit_ledger")}
    assert built == {"ix_credit_ledger_account_id", "ix_credit_ledger_owner"}
    assert {index.name for index in LedgerEntry.__table__.indexes} == built


def test_unit_of_work_commits_or_rolls_back(db: Database) -> None:
    with db.session() as session:
        AccountService(session).create_account("kept")
    with pytest.raises(RuntimeError), db.session() as session:
        AccountService(session).create_account("dropped")
        raise RuntimeError("fail after the write")
    with db.session(write=False) as session:
        names = {a.name for a in AccountService(session).store.list_accounts()}
    assert names == {"kept"}


def test_sqlite_runs_in_wal_with_a_busy_timeout(db: Database, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite only")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_postgres_has_the_vector_extension(db: Database, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only")
    with db.engine.connect() as conn:
        names = set(conn.execute(text("SELECT extname FROM pg_extension")).scalars())
    assert "vector" in names


def test_write_transactions_serialise_read_modify_write(db: Database, backend: str) -> None:
    """BEGIN IMMEDIATE (SQLite) / FOR UPDATE (PostgreSQL): no lost update among racing writers."""
    with db.session() as session:
        session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (1, 0)"))
    lock = " FOR UPDATE" if backend == "postgresql" else ""
    errors: list[BaseException] = []

    def bump(times: int) -> None:
        try:
            for _ in range(times):
                with db.session() as session:
                    n = session.execute(
                        text(f"SELECT n FROM counter WHERE id = 1{lock}")
                    ).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(40,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with db.session(write=False) as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 240


def test_sqlite_write_turn_is_handed_over_however_a_transaction_ends(
    settings: Settings, backend: str
) -> None:
    """The in-process write turn is released on commit, on rollback, on a connection closed
    mid-transaction and across threads; a writer waiting for it gets it when it is free and a
    clear timeout (503 upstream) when it is not."""
    if backend != "sqlite":
        pytest.skip("SQLite only")
    db = Database(settings.model_copy(update={"sqlite_busy_timeout_ms": 300}))
    upgrade(db)
    try:
        with db.session() as session:
            session.execute(text("CREATE TABLE t (n INTEGER)"))
        with pytest.raises(ZeroDivisionError), db.session() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            raise ZeroDivisionError  # rolled back
        connection = db.engine.connect()
        connection.begin()
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        with pytest.raises(PoolTimeout), db.session() as session:
            session.execute(text("INSERT INTO t VALUES (3)"))  # the turn is taken
        connection.close()  # ends mid-transaction: rolled back, the turn handed back
        opened = db.engine.connect()
        opened.begin()
        opened.exec_driver_sql("INSERT INTO t VALUES (4)")
        closer = threading.Thread(target=lambda: (opened.commit(), opened.close()))
        closer.start()  # another thread ends it
        closer.join()
        with db.session() as session:
            session.execute(text("INSERT INTO t VALUES (5)"))
        with db.session(write=False) as session:
            assert sorted(session.execute(text("SELECT n FROM t")).scalars()) == [4, 5]
    finally:
        db.dispose()


def test_sqlite_write_turn_is_handed_over_after_the_commit_has_run(
    settings: Settings, backend: str
) -> None:
    """The next writer gets the in-process write turn only once the COMMIT (or ROLLBACK) has
    run, not when SQLAlchemy announces it: its BEGIN IMMEDIATE then never meets SQLite's lock
    still held (which sends it napping in the busy handler; with no busy timeout, as here, it
    fails at once). Each transaction is held open in its "commit"/"rollback" event for 0.1 s
    while another thread asks for a write session."""
    if backend != "sqlite":
        pytest.skip("SQLite only")
    from sqlalchemy import event

    db = Database(settings.model_copy(update={"sqlite_busy_timeout_ms": 2000}))
    upgrade(db)

    @event.listens_for(db.engine, "connect")
    def _no_busy_wait(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[attr-defined]

    db.engine.dispose()  # connections from here on wait nowhere but on the write turn
    failures: list[BaseException] = []

    def other_writer() -> None:
        try:
            with db.session() as session:
                session.execute(text("INSERT INTO t VALUES (0)"))
        except BaseException as error:
            failures.append(error)

    def while_ending(_conn: object) -> None:
        if threading.current_thread() is threading.main_thread():
            other = threading.Thread(target=other_writer)
            other.start()
            time.sleep(0.1)  # the other writer asks for the turn before the COMMIT runs
            ending.append(other)

    ending: list[threading.Thread] = []
    try:
        with db.session() as session:
            session.execute(text("CREATE TABLE t (n INTEGER)"))
        event.listen(db.engine, "commit", while_ending)
        event.listen(db.engine, "rollback", while_ending)
        with db.session() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(ZeroDivisionError), db.session() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
            raise ZeroDivisionError
        event.remove(db.engine, "commit", while_ending)
        event.remove(db.engine, "rollback", while_ending)
        for other in ending:
            other.join()
        assert len(ending) >= 2 and failures == []
        with db.session(write=False) as session:
            assert sorted(session.execute(text("SELECT n FROM t")).scalars()) == [0, 0, 1]
    finally:
        db.dispose()


def test_sqlite_begin_on_a_database_locked_elsewhere_is_sqlalchemys_error(
    settings: Settings, backend: str
) -> None:
    """`BEGIN IMMEDIATE`, sent on the DB-API cursor (`kit/raw_sql.run_fixed`), still fails
    as SQLAlchemy's OperationalError (answered 503) when another process holds the write lock
    past the busy timeout, and gives the in-process write turn back."""
    if backend != "sqlite":
        pytest.skip("SQLite only")
    import sqlite3

    db = Database(settings.model_copy(update={"sqlite_busy_timeout_ms": 200}))
    upgrade(db)
    other = sqlite3.connect(settings.sqlalchemy_url.split("///", 1)[1], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"), db.session() as session:
            session.execute(text("SELECT 1"))
        other.execute("COMMIT")
        with db.session() as session:  # the write turn was handed back
            session.execute(text("SELECT 1"))
    finally:
        other.close()
        db.dispose()


def test_point_reads_run_without_a_transaction(db: Database, backend: str) -> None:
    """`point_reads` sends no BEGIN/COMMIT (on PostgreSQL two round trips saved per read); a
    plain read session keeps its transaction, which a server-side cursor (`yield_per`, as the
    usage report streams the ledger) needs; and the pooled connection goes back to transactions
    for the next writer."""

    def in_transaction(session: Session) -> bool:
        raw = session.connection().connection.driver_connection
        if backend == "sqlite":
            return bool(raw.in_transaction)
        import psycopg

        if raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            assert raw.autocommit is False
            return True
        return False

    with db.point_reads() as session:
        session.execute(text("SELECT 1"))
        assert not in_transaction(session)
    with db.session(write=False) as session:
        session.execute(text("SELECT 1"))
        assert in_transaction(session)
        if backend == "postgresql":
            streamed = session.execute(
                text("SELECT generate_series(1, 2500)").execution_options(yield_per=1000)
            )
            assert sum(1 for _ in streamed) == 2500
    with db.session() as session:
        session.execute(text("SELECT 1"))
        assert in_transaction(session)


def test_a_change_left_in_point_reads_is_an_error_and_never_written(db: Database) -> None:
    """Point reads end without a commit: an ORM change left in one (a mistake) raises instead
    of being dropped in silence, and nothing of it is written on either engine."""
    from sessionary.accounts.models import Account

    with pytest.raises(RuntimeError, match="never writes"), db.point_reads() as session:
        session.add(Account(id="acct_point_write", name="left behind"))
    with db.session(write=False) as session:
        assert session.get(Account, "acct_point_write") is None


def test_a_write_in_point_reads_is_refused_on_sqlite(db: Database, backend: str) -> None:
    """Point reads have no transaction, so a write there (a mistake) would commit at once,
    outside the write turn and any rollback: SQLite refuses it (`query_only`), and the same
    pooled connection writes normally in the next write session."""
    if backend != "sqlite":
        pytest.skip("SQLite only: PostgreSQL's autocommit point reads have no such guard")
    with db.session() as session:
        session.execute(text("CREATE TABLE pr_t (n INTEGER)"))
    for n in range(3):
        with pytest.raises(OperationalError, match="readonly"), db.point_reads() as session:
            session.execute(text(f"INSERT INTO pr_t VALUES ({n})"))
        with db.session() as session:
            session.execute(text(f"INSERT INTO pr_t VALUES ({10 + n})"))
    with db.point_reads() as session:
        assert sorted(session.execute(text("SELECT n FROM pr_t")).scalars()) == [10, 11, 12]


def test_savepoints_roll_back_alone_on_both_engines(db: Database) -> None:
    """A savepoint (`begin_nested`, sent as text by `kit/db.fixed_savepoints`) rolled back by a
    failed statement inside it undoes only its own writes: the transaction around it goes on
    and commits, as a turn's charge does when its transcript cannot be stored. One released
    keeps its writes; several in one transaction (new names each) work alike."""
    with db.session() as session:
        session.execute(text("CREATE TABLE sp_t (n INTEGER PRIMARY KEY)"))
    with db.session() as session:
        session.execute(text("INSERT INTO sp_t VALUES (1)"))
        for attempt in range(3):
            with pytest.raises(IntegrityError), session.begin_nested():
                session.execute(text(f"INSERT INTO sp_t VALUES ({10 + attempt})"))
                session.execute(text("INSERT INTO sp_t VALUES (1)"))  # duplicate key
        with session.begin_nested():
            session.execute(text("INSERT INTO sp_t VALUES (2)"))
        with pytest.raises(ZeroDivisionError), session.begin_nested():
            session.execute(text("INSERT INTO sp_t VALUES (3)"))
            raise ZeroDivisionError
    with db.session(write=False) as session:
        assert sorted(session.execute(text("SELECT n FROM sp_t")).scalars()) == [1, 2]


@pytest.mark.parametrize("unit", ["session", "point_reads"])
def test_postgres_pings_only_a_connection_left_idle(
    db: Database, backend: str, unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping while connections turn over (a round trip per checkout, four per turn, with
    `pool_pre_ping`); a connection idle past PING_AFTER_IDLE_S is pinged, and one whose server
    side died meanwhile is replaced without the caller seeing an error. Both pools: the
    transactions' and the autocommit one of point reads and single statements."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL only")
    from sessionary.kit import db as kit_db

    pings: list[object] = []
    dialect_class = type(db.engine.dialect)  # both engines' dialects
    real_ping = dialect_class.do_ping

    def counting_ping(self: object, dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return real_ping(self, dbapi_connection)  # type: ignore[arg-type]

    monkeypatch.setattr(dialect_class, "do_ping", counting_ping)
    opened = db.session if unit == "session" else db.point_reads
    idle_s = kit_db.PING_AFTER_IDLE_S
    # Turning over, never idle: not even on a loaded machine, which can stall 0.1 s between two
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", 5.0)
    for _ in range(5):
        with opened() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
    assert pings == []
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", idle_s)
    outside = create_engine(db.engine.url, poolclass=NullPool)
    with outside.connect() as other:  # the pooled connection's server side goes away
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.commit()
    outside.dispose()
    time.sleep(kit_db.PING_AFTER_IDLE_S + 0.05)  # killed a moment ago: 0.2 s gave a 503 at 1 s
    with opened() as session:
        assert session.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    assert len(pings) >= 1


def test_worker_units_of_work_run_at_most_db_threads_at_once(settings: Settings) -> None:
    """`Database.in_worker` runs no more than `db_threads` at once (more only contend for the GIL
    and the database); work on anyio's default pool is not held up by them; and each event loop
    gets a limiter of its own (a second loop, as a second test client makes, works as well)."""
    import anyio
    import anyio.to_thread

    database = Database(settings.model_copy(update={"db_threads": 2}))
    running = peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(database.in_worker, work)
            await anyio.sleep(0.2)
            assert running == 2  # the other four wait for a thread
            # Long work on anyio's own pool runs meanwhile, and so does work that may wait on a
            # model (it never takes one of the few threads).
            assert await anyio.to_thread.run_sync(lambda: "free") == "free"
            assert await database.in_worker(lambda: "free", waits_elsewhere=True) == "free"
            release.set()

    try:
        anyio.run(main)
        assert peak == 2
        release.clear()
        peak = 0
        anyio.run(main)  # another event loop, its own limiter
        assert peak == 2
    finally:
        database.dispose()


def test_work_waiting_on_a_model_never_takes_the_default_pools_tokens(settings: Settings) -> None:
    """Searches queued behind an ingestion's batches (`waits_elsewhere`), every one of their
    `WAITING_THREADS` tokens taken and more waiting: FastAPI's `def` routes, which take anyio's
    default limiter, still run at once, and so does a database unit of work."""
    import anyio
    import anyio.to_thread

    from sessionary.kit.db import WAITING_THREADS

    database = Database(settings)
    release = threading.Event()
    waiting = 0
    lock = threading.Lock()

    def wait_on_the_model() -> None:
        nonlocal waiting
        with lock:
            waiting += 1
        release.wait(10)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(WAITING_THREADS + 5):
                group.start_soon(
                    lambda: database.in_worker(wait_on_the_model, waits_elsewhere=True)
                )
            await anyio.sleep(0.3)
            assert waiting == WAITING_THREADS  # the five others wait for a token of theirs
            with anyio.fail_after(2):
                assert await anyio.to_thread.run_sync(lambda: "route") == "route"
                assert await database.in_worker(lambda: "unit of work") == "unit of work"
            release.set()

    try:
        anyio.run(main)
        assert waiting == WAITING_THREADS + 5
    finally:
        release.set()
        database.dispose()


def test_a_turn_counted_through_a_local_model_does_not_take_a_database_thread() -> None:
    """A local model counts a prompt on the worker that generates (busy for seconds with
    another turn): its turns plan under the limiter of work that waits (`waits_elsewhere`), so
    a queue of them cannot hold every database thread. A remote model counts at once."""
    from sessionary.assistant.turn_billing import counts_at_once
    from sessionary.providers.llm.local import LlamaCppChat
    from sessionary.providers.llm.openai import OpenAIChat

    assert not hasattr(LlamaCppChat, "count_tokens_now")
    assert not counts_at_once(LlamaCppChat.__new__(LlamaCppChat))
    assert counts_at_once(OpenAIChat.__new__(OpenAIChat))


def test_a_new_database_file_opened_by_several_connections_at_once_opens_for_all(
    tmp_path: Path,
) -> None:
    """Connections that open a new SQLite file at the same moment race to switch it to WAL,
    and SQLite's busy handler does not wait for that switch's locks: the losers' connect failed
    with "database is locked" at once (22 of 300 trials of four raw connections; the test
    suite met it at a fixture's setup). Each connect now waits for the switch to end."""
    failures: list[str] = []
    for trial in range(TRIALS_NEW_FILE):
        settings = Settings(
            data_dir=tmp_path / f"trial{trial}", log_level="WARNING", preload_models=False
        )
        engines = [make_engine(settings) for _ in range(4)]
        start = threading.Barrier(len(engines))

        def open_and_read(engine: Engine, start: threading.Barrier) -> None:
            start.wait()
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
            except OperationalError as error:
                failures.append(str(error.orig))

        threads = [threading.Thread(target=open_and_read, args=(e, start)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == []


TRIALS_NEW_FILE = 150


def test_new_ids_are_ulids_with_the_os_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """`new_id`: a prefix and a ULID (Crockford base32, 26 characters) whose first 48 bits are
    the millisecond it was made and whose other 80 bits are the OS's randomness (`os.urandom`),
    never a seeded generator's; ids sort in the order they were made, within a millisecond
    too (the last id's bits plus one), and those of later milliseconds after."""
    before = time.time_ns() // 1_000_000
    made = [new_id("resp") for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made) and made == sorted(made)
    for one in made:
        assert re.fullmatch(r"resp_[0-9A-HJKMNP-TV-Z]{26}", one)
        assert before <= ulid_to_timestamp(one[5:]) <= after
    time.sleep(0.003)
    assert new_id("resp") > max(made)
    monkeypatch.setattr(ids_module.os, "urandom", lambda n: b"\x00" * n)
    monkeypatch.setattr(ids_module.time, "time_ns", lambda: 7_000_000_000_000)
    fresh = ids_module._Monotonic()  # a new millisecond: the OS's bits, then one more each
    monkeypatch.setattr(ids_module, "_IDS", fresh)
    assert [new_id("msg")[-3:] for _ in range(3)] == ["000", "001", "002"]
    fresh.random = (1 << 80) - 1  # none left in this millisecond: the next one, new bits
    last = new_id("msg")
    assert last.endswith("0" * 16) and ulid_to_timestamp(last[4:]) == 7_000_000 + 1
    monkeypatch.setattr(ids_module.time, "time_ns", lambda: 6_000_000_000_000)  # clock back
    assert new_id("msg") > last


def test_ids_stay_in_order_on_every_thread() -> None:
    """Threads making ids at once, across millisecond boundaries: each thread's ids sort in
    the order it made them (the clock read before the lock let one go back: about 70 of
    200,000 out of order with two threads)."""
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(30_000):
            out.append(new_id("x"))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for out in made:
        assert out == sorted(out)
    assert len({i for out in made for i in out}) == 120_000
