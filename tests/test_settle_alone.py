"""A settle with nothing else to commit (`Meter.settle_now`, a chat completion that is not
stored): on PostgreSQL one statement in autocommit when the charge is within the hold, and
the transaction of `Ledger.settle` otherwise (and always on SQLite). The money is the same
either way: these tests run on both engines and check it after each path."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.metering import Meter
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.money import charges, money


def _held(db: Database, tenant: Tenant, funds: int, amount: int) -> Meter:
    with db.session() as session:
        Ledger(session).grant(Owner.account(tenant.account_id), funds)
    return Meter(db, Meter.hold(db, Owner.account(tenant.account_id), amount, "/v1/x"))


def _transactions(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every `Database.session` opened from now on (its options)."""
    opened: list[dict[str, Any]] = []
    real = Database.session

    def session(self: Database, **options: Any) -> Any:
        opened.append(options)
        return real(self, **options)

    monkeypatch.setattr(Database, "session", session)
    return opened


def test_a_charge_within_the_hold_is_one_durable_statement(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = _held(db, tenant, 1_000, 500)
    flushes: list[str] = []
    alone = Ledger.settle_alone

    def spying(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        flushes.append(str(self.store.db.execute(text("SHOW synchronous_commit")).scalar()))
        return alone(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "settle_alone", spying)
    opened = _transactions(db, monkeypatch)
    settled = meter.settle_now(200, model="m", usage={"total_tokens": 3})
    monkeypatch.undo()
    assert (settled.charged_micro, settled.remaining_micro) == (200, 800)
    if db.dialect == "postgresql":
        assert opened == [] and flushes == ["on"]  # no BEGIN/COMMIT; it waits for the flush
    else:
        assert len(opened) == 1 and flushes == []
    assert money(db, tenant) == (800, 800, 0)
    assert charges(db, tenant) == [200]
    assert meter.settle_now(200).charged_micro == 0  # settled once: never twice
    assert money(db, tenant) == (800, 800, 0)


@pytest.mark.parametrize("actual", [1_200, 10**30])
def test_a_charge_above_the_hold_takes_the_transaction(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, actual: int
) -> None:
    """Larger than the hold (past a BIGINT too): the one statement writes nothing, and
    `Ledger.settle` charges what the balance allows with the hold back."""
    meter = _held(db, tenant, 1_000, 300)
    opened = _transactions(db, monkeypatch)
    settled = meter.settle_now(actual)
    monkeypatch.undo()
    assert len(opened) == 1
    assert (settled.charged_micro, settled.remaining_micro) == (1_000, 0)
    assert money(db, tenant) == (0, 0, 0)
    assert charges(db, tenant) == [1_000]


def test_a_hold_released_before_its_settle_is_charged_from_the_balance(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep gave the hold back first (it expired): the statement finds nothing open and
    writes nothing; the transaction charges the balance as far as it goes."""
    meter = _held(db, tenant, 1_000, 500)
    with db.session() as session:
        assert Ledger(session).release(meter.reservation.id) is not None
    opened = _transactions(db, monkeypatch)
    settled = meter.settle_now(200)
    monkeypatch.undo()
    assert len(opened) == 1
    assert (settled.charged_micro, settled.remaining_micro) == (200, 800)
    assert money(db, tenant) == (800, 800, 0)
    assert charges(db, tenant) == [200]
