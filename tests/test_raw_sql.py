"""Prebuilt statements on the DB-API cursor (`kit/raw_sql.py`) behave as SQLAlchemy would run
them, on both engines: types both ways, column defaults, literal binds, errors, transactions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sessionary.billing.models import CreditReservation
from sessionary.billing.store import _CLOSE, _RESERVE
from sessionary.kit.db import Database
from sessionary.kit.raw_sql import run
from tests.conftest import Tenant


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
