"""The schema and transactions behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sessionary.accounts.service import AccountService
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import current_revision, head_revision, upgrade


def test_migrations_reach_head_and_rerun_as_a_no_op(db: Database) -> None:
    assert current_revision(db) == head_revision()
    upgrade(db)
    assert current_revision(db) == head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert {"accounts", "api_keys", "alembic_version"} <= tables


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
