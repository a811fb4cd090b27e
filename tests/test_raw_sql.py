"""Prebuilt statements on the DB-API cursor (`kit/raw_sql.py`) behave as SQLAlchemy would run
them, on both engines: types both ways, column defaults, literal binds, errors, transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from sessionary.billing.models import CreditReservation
from sessionary.billing.store import _CLOSE, _RESERVE
from sessionary.kit.db import Database
from sessionary.kit.raw_sql import TOGETHER, holding_inserts, run
from sessionary.kit.sql import insert_values
from tests.conftest import Tenant
from tests.support.statements import from_a_request


def _hold(tenant: Tenant, rid: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "owner_type": "account",
        "owner_id": tenant.account_id,
        "account_id": tenant.account_id,
        "amount_micro": 2**62,  # a BIGINT past 32 bits
        "expires_at": datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        **overrides,
    }


def _stored(db: Database, rid: str) -> CreditReservation | None:
    with db.session(write=False) as session:
        return session.scalar(select(CreditReservation).where(CreditReservation.id == rid))


def test_types_defaults_and_literal_binds(db: Database, tenant: Tenant) -> None:
    """Unset columns get their Python defaults (status 'open', created_at now); datetimes go in
    as UTC and come back aware from RETURNING; the statement's literal `status = 'open'` is
    sent, so a second close finds nothing."""
    before = datetime.now(UTC)
    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_raw_1"))
    row = _stored(db, "rsv_raw_1")
    assert row is not None
    assert row.status == "open" and row.amount_micro == 2**62
    assert row.expires_at == datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert before - timedelta(seconds=1) <= row.created_at <= datetime.now(UTC)
    closing_at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    params = {"p_id": "rsv_raw_1", "p_status": "settled", "p_now": closing_at}
    with db.session() as session:
        closed = run(session.connection(), _CLOSE, params).first()
        again = run(session.connection(), _CLOSE, params).first()
    assert closed is not None and again is None
    assert (closed.id, closed.status, closed.amount_micro) == ("rsv_raw_1", "settled", 2**62)
    assert closed.closed_at == closing_at and closed.closed_at.tzinfo is not None
    assert closed.expires_at == datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_many_rows_one_transaction_and_errors(db: Database, tenant: Tenant) -> None:
    """executemany writes every row; the statements share the session's transaction (a
    rollback takes them back); a driver error is SQLAlchemy's IntegrityError, parameters
    hidden."""
    with db.session() as session:
        run(session.connection(), _RESERVE, [_hold(tenant, "rsv_m1"), _hold(tenant, "rsv_m2")])
    assert _stored(db, "rsv_m1") is not None and _stored(db, "rsv_m2") is not None
    with pytest.raises(RuntimeError), db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_gone"))
        raise RuntimeError("the unit of work fails after the insert")
    assert _stored(db, "rsv_gone") is None
    with pytest.raises(IntegrityError) as caught, db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_m1", owner_type="x" * 3))
    assert tenant.account_id not in str(caught.value)
    with pytest.raises(IntegrityError), db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_null", owner_id=None))
    assert _stored(db, "rsv_null") is None


def test_insert_values_one_many_or_none(db: Database, tenant: Tenant) -> None:
    """`insert_values` (a turn's messages and response, given as column values): one row, many
    in one statement, and none at all (a turn with no message to store) without a statement
    the driver would refuse."""
    table = CreditReservation.__table__
    with db.session() as session:
        insert_values(session, table, [_hold(tenant, "rsv_v1")])
        insert_values(session, table, [_hold(tenant, "rsv_v2"), _hold(tenant, "rsv_v3")])
        insert_values(session, table, [])
    assert all(_stored(db, rid) is not None for rid in ("rsv_v1", "rsv_v2", "rsv_v3"))


def test_refused_outside_a_transaction_and_bad_parameters(db: Database, tenant: Tenant) -> None:
    """Never in autocommit (it would skip BEGIN IMMEDIATE and escape rollback); a parameter
    its type refuses, or one missing, is SQLAlchemy's StatementError, as on its own path."""
    with db.engine.connect() as connection, pytest.raises(RuntimeError, match="transaction"):
        run(connection, _RESERVE, _hold(tenant, "rsv_auto"))
    assert _stored(db, "rsv_auto") is None
    naive = _hold(tenant, "rsv_naive", expires_at=datetime(2030, 1, 1))
    with pytest.raises(StatementError, match="naive"), db.session() as session:
        run(session.connection(), _RESERVE, naive)
    with pytest.raises(StatementError), db.session() as session:
        run(session.connection(), _CLOSE, {"p_id": "rsv_x", "p_status": "settled"})


def test_a_lost_postgresql_connection_is_invalidated(db: Database, tenant: Tenant) -> None:
    """A backend killed mid-transaction: the error says the connection was invalidated (as
    SQLAlchemy's own path does), and the next unit of work gets a live connection."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    with pytest.raises(OperationalError) as caught, db.session() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_lost"))
    assert caught.value.connection_invalidated
    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_after"))
    assert _stored(db, "rsv_after") is not None and _stored(db, "rsv_lost") is None


def _exists(session: Any, rid: str) -> bool:
    found = session.execute(text("SELECT 1 FROM credit_reservations WHERE id = :i"), {"i": rid})
    return found.first() is not None


def _sent(session: Any, rid: str) -> bool:
    """Whether the row is in the transaction, asked past SQLAlchemy (which would send first)."""
    raw = session.connection().connection.driver_connection
    found = raw.execute("SELECT 1 FROM credit_reservations WHERE id = %s", (rid,))
    return found.fetchone() is not None


def test_held_inserts_go_out_together_before_the_next_statement(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL (`holding_inserts`): a plain INSERT is held back (not yet in the transaction);
    the next other statement, raw or run by SQLAlchemy, sends what is held first, in one
    statement (one cursor call), then runs; what is left when the block ends is sent before
    the commit; nothing is sent when the block raises."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no round trips to save")
    import psycopg

    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_held_open"))
    close = {"p_id": "rsv_held_open", "p_status": "settled", "p_now": datetime.now(UTC)}
    calls: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if from_a_request():
            calls.append(str(query)[:30])
        return execute(cursor, query, *args, **kwargs)

    with db.session() as session:
        connection = session.connection()
        with holding_inserts(connection) as held:
            assert held is not None
            run(connection, _RESERVE, [_hold(tenant, "rsv_held_1"), _hold(tenant, "rsv_held_2")])
            run(connection, _RESERVE, _hold(tenant, "rsv_held_3"))
            assert len(held.rows) == 3 and not _sent(session, "rsv_held_1")
            monkeypatch.setattr(psycopg.Cursor, "execute", counted)
            assert run(connection, _CLOSE, close).first() is not None
            monkeypatch.undo()
            assert calls[0].startswith("WITH held_0 AS (INSERT") and len(calls) == 2, calls
            assert held.rows == [] and not held.failed
            assert all(_sent(session, f"rsv_held_{n}") for n in (1, 2, 3))
            run(connection, _RESERVE, _hold(tenant, "rsv_held_4"))
            assert _exists(session, "rsv_held_4")  # SQLAlchemy's statement sent it first
            run(connection, _RESERVE, _hold(tenant, "rsv_held_5"))  # left for the block's end
            assert not _sent(session, "rsv_held_5")
    assert all(_stored(db, f"rsv_held_{n}") is not None for n in range(1, 6))
    with pytest.raises(RuntimeError), db.session() as session:
        connection = session.connection()
        with holding_inserts(connection):
            run(connection, _RESERVE, _hold(tenant, "rsv_held_never"))
            raise RuntimeError("the unit fails")
    assert _stored(db, "rsv_held_never") is None


def test_a_held_insert_refused_fails_the_statement_that_sends_it(
    db: Database, tenant: Tenant
) -> None:
    """A held row the database refuses (here a duplicate key, the last of three) fails the
    statement that sends them with the usual IntegrityError and marks the hold `failed`
    (`Database.commit_apart` then runs the rest alone); the statement that was to follow
    never runs."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_dup"))
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_to_close"))
    close = {"p_id": "rsv_to_close", "p_status": "settled", "p_now": datetime.now(UTC)}
    with pytest.raises(IntegrityError), db.session() as session:
        connection = session.connection()
        with holding_inserts(connection) as held:
            assert held is not None
            run(connection, _RESERVE, [_hold(tenant, "rsv_ok_1"), _hold(tenant, "rsv_ok_2")])
            run(connection, _RESERVE, _hold(tenant, "rsv_dup"))
            try:
                run(connection, _CLOSE, close)
            finally:
                assert held.failed
    row = _stored(db, "rsv_to_close")
    assert row is not None and row.status == "open" and _stored(db, "rsv_ok_1") is None


def test_more_held_rows_than_one_statement_takes_go_in_batches(
    db: Database, tenant: Tenant
) -> None:
    """A turn with a long input holds many rows: past `TOGETHER` they go in executemany
    batches, in order, before the next statement, which then runs as it is."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_many_open"))
    count = TOGETHER * 40
    close = {"p_id": "rsv_many_open", "p_status": "settled", "p_now": datetime.now(UTC)}
    with db.session() as session:
        connection = session.connection()
        with holding_inserts(connection) as held:
            assert held is not None
            run(connection, _RESERVE, [_hold(tenant, f"rsv_many_{n}") for n in range(count)])
            assert run(connection, _CLOSE, close).first() is not None
            assert held.rows == [] and _sent(session, f"rsv_many_{count - 1}")
    with db.session(write=False) as session:
        stored = session.execute(
            text("SELECT count(*) FROM credit_reservations WHERE id LIKE 'rsv_many_%'")
        ).scalar()
    assert stored == count + 1
