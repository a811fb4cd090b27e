"""The ledger on both engines: movements, 402, and the invariants enforced by the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from sessionary.billing.ledger import Ledger, Owner, _reservation_row
from sessionary.billing.money import credits_to_micro
from sessionary.billing.store import hold_at_once, hold_in
from sessionary.kit.db import Database
from sessionary.kit.errors import InsufficientCredits, InvalidRequest

ACME = Owner.account("acct_acme")
USER = Owner.external_user("eu_one", "acct_acme")


def check_invariants(db: Database, *owners: Owner) -> None:
    with db.session(write=False) as session:
        ledger = Ledger(session)
        for owner in owners:
            assert ledger.balance(owner) == ledger.ledger_sum(owner)
            assert ledger.balance(owner) >= 0


def test_grant_charge_refund(db: Database) -> None:
    with db.session() as session:
        ledger = Ledger(session)
        assert ledger.grant(ACME, credits_to_micro(10)) == 10_000_000
        settlement = ledger.charge(ACME, 2_500_000, route="/v1/x", usage={"tokens": 3})
        assert (settlement.charged_micro, settlement.remaining_micro) == (2_500_000, 7_500_000)
        assert ledger.refund(ACME, 500_000) == 8_000_000
    check_invariants(db, ACME)


def test_account_and_external_user_balances_are_separate(db: Database) -> None:
    with db.session() as session:
        ledger = Ledger(session)
        ledger.grant(ACME, 100)
        ledger.grant(USER, 7)
        assert (ledger.balance(ACME), ledger.balance(USER)) == (100, 7)
    check_invariants(db, ACME, USER)


def test_charge_beyond_the_balance_is_402_and_changes_nothing(db: Database) -> None:
    with db.session() as session:
        Ledger(session).grant(ACME, 1_000)
    with pytest.raises(InsufficientCredits) as refused, db.session() as session:
        Ledger(session).charge(ACME, 1_001)
    assert refused.value.headers["x-credits-remaining"] == "0.001"
    with db.session(write=False) as session:
        assert Ledger(session).balance(ACME) == 1_000
    with pytest.raises(InsufficientCredits), db.session() as session:
        Ledger(session).charge(Owner.account("acct_never_funded"), 1)
    check_invariants(db, ACME)


def test_grants_must_be_positive(db: Database) -> None:
    with pytest.raises(InvalidRequest), db.session() as session:
        Ledger(session).grant(ACME, 0)
    with pytest.raises(InvalidRequest), db.session() as session:
        Ledger(session).grant(ACME, -5)


def test_reserve_settle_release(db: Database) -> None:
    with db.session() as session:
        ledger = Ledger(session)
        ledger.grant(ACME, 1_000)
        held = ledger.reserve(ACME, 600)
        assert ledger.balance(ACME) == 400
        with pytest.raises(InsufficientCredits):
            ledger.reserve(ACME, 401)
        settled = ledger.settle(held.id, 250)
        assert (settled.charged_micro, settled.remaining_micro) == (250, 750)
        # Closed once: neither a second settle nor a release moves credits again.
        assert ledger.release(held.id) is None
        again = ledger.reserve(ACME, 700)
        assert ledger.release(again.id) == 750
        assert ledger.release(again.id) is None
        assert ledger.store.count_open_reservations() == 0
    check_invariants(db, ACME)


def test_settle_never_charges_more_than_the_owner_has(db: Database) -> None:
    with db.session() as session:
        ledger = Ledger(session)
        ledger.grant(ACME, 100)
        held = ledger.reserve(ACME, 100)
        settled = ledger.settle(held.id, 5_000)
        assert (settled.charged_micro, settled.remaining_micro) == (100, 0)
        ledger.grant(ACME, 300)
        held = ledger.reserve(ACME, 200)
        for past_a_bigint in (2**63 - 1, 2**63 + 150, 2**70):  # charges what there is, once
            settled = ledger.settle(held.id, past_a_bigint)
            assert (settled.charged_micro, settled.remaining_micro) == (300, 0)
            held = ledger.reserve(ACME, 0)
            ledger.grant(ACME, 300)
    check_invariants(db, ACME)


def test_expired_reservations_return_to_their_owner(db: Database) -> None:
    with db.session() as session:
        ledger = Ledger(session, reservation_ttl=timedelta(seconds=-1))
        ledger.grant(ACME, 1_000)
        stranded = ledger.reserve(ACME, 900)  # its process "died": never settled
        assert ledger.balance(ACME) == 100
    with db.session() as session:
        ledger = Ledger(session)
        ledger.reserve(ACME, 950)  # the sweep before reserving gives the 900 back first
        assert ledger.store.get_reservation(stranded.id).status == "released"  # type: ignore[union-attr]
        # A late settle of the swept reservation charges from what is left, never below zero.
        late = ledger.settle(stranded.id, 80)
        assert late.charged_micro == 50
        assert ledger.balance(ACME) == 0
    check_invariants(db, ACME)


def test_the_database_refuses_a_negative_balance(db: Database) -> None:
    with db.session() as session:
        Ledger(session).grant(ACME, 10)
    with pytest.raises(IntegrityError), db.session() as session:
        session.execute(text("UPDATE credit_balances SET balance_micro = -1"))


@pytest.mark.parametrize(
    "statement", ["UPDATE credit_ledger SET amount_micro = 0", "DELETE FROM credit_ledger"]
)
def test_the_ledger_is_append_only(db: Database, statement: str) -> None:
    with db.session() as session:
        Ledger(session).grant(ACME, 10)
    with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
        session.execute(text(statement))
    check_invariants(db, ACME)


def test_a_settle_writes_the_release_and_the_charge_with_consistent_running_balances(
    db: Database,
) -> None:
    """Settled at once (one balance update, both entries in one insert): the release's running
    balance is the charge's plus the charge, and each equals the ledger's sum up to it."""
    with db.session() as session:
        ledger = Ledger(session)
        ledger.grant(ACME, 1_000)
        held = ledger.reserve(ACME, 400)
        assert ledger.settle(held.id, 150).remaining_micro == 850
        entries = sorted(ledger.store.entries(ACME.type, ACME.id), key=lambda e: e.kind)
        release, charge = (next(e for e in entries if e.kind == k) for k in ("release", "charge"))
        assert (release.amount_micro, release.balance_after_micro) == (400, 1_000)
        assert (charge.amount_micro, charge.balance_after_micro) == (-150, 850)
        assert release.reservation_id == charge.reservation_id == held.id
        assert ledger.settle(held.id, 150).charged_micro == 0  # never charged twice
    check_invariants(db, ACME)


def test_an_expired_hold_is_swept_when_a_spend_would_be_refused(db: Database) -> None:
    """No sweep runs on a reserve that the balance covers; one the balance refuses sweeps the
    owner's expired holds first, then tries again (a charge likewise)."""
    with db.session() as session:
        ledger = Ledger(session, reservation_ttl=timedelta(seconds=-1))
        ledger.grant(ACME, 1_000)
        stranded = ledger.reserve(ACME, 600)
        other = ledger.reserve(ACME, 300)  # covered: the stranded hold stays as it is
        assert ledger.store.get_reservation(stranded.id).status == "open"  # type: ignore[union-attr]
        assert ledger.charge(ACME, 500).remaining_micro == 500  # refused, both swept, charged
        for hold in (stranded, other):
            assert ledger.store.get_reservation(hold.id).status == "released"  # type: ignore[union-attr]
        with pytest.raises(InsufficientCredits):
            ledger.charge(ACME, 501)  # nothing left to sweep: refused
    check_invariants(db, ACME)


def test_a_bare_hold_writes_what_reserve_writes(db: Database) -> None:
    """`reserve_on`, with no session around it (PostgreSQL: one statement in autocommit;
    SQLite: three in a bare write transaction), writes what `reserve` writes: the balance, a
    reservation entry carrying the balance after it, an open reservation expiring one TTL
    later. On PostgreSQL it commits without waiting for the disk, for its own transaction only.
    A balance that cannot cover it writes nothing at all (the caller then takes `reserve`); on
    SQLite a bare transaction that raises keeps nothing of its hold."""
    postgres = db.dialect == "postgresql"
    with pytest.raises(RuntimeError), db.bare_write() if postgres else db.one_statement():
        pass
    if not postgres:
        with pytest.raises(RuntimeError):
            db.single_statements()
    with db.session() as session:
        Ledger(session).grant(ACME, 1_000)
    ttl = timedelta(minutes=3)
    bare = db.one_statement if postgres else db.bare_write
    with bare() as connection:
        held = Ledger.reserve_on(connection, ACME, 400, route="/v1/responses", reservation_ttl=ttl)
        assert held is not None and held.amount_micro == 400
        entry = Ledger._entry(ACME, "reservation", -700, 0, reservation_id="rsv_short")
        row = _reservation_row(ACME, 700, None, ttl)
        hold = hold_at_once if postgres else hold_in
        assert hold(connection, entry, row) is None  # 600 left: nothing written
        entry = Ledger._entry(ACME, "reservation", -100, 0, reservation_id="rsv_fits")
        row = _reservation_row(ACME, 100, None, ttl)
        if postgres:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
            assert tuple(hold_at_once(connection, entry, row)) == (500, "off")
        else:
            assert hold_in(connection, entry, row) == 500
    if not postgres:
        with pytest.raises(ZeroDivisionError), db.bare_write() as connection:
            assert Ledger.reserve_on(connection, ACME, 50, reservation_ttl=ttl) is not None
            raise ZeroDivisionError  # rolled back: the 50 stays in the balance
    with db.session(write=False) as session:
        ledger = Ledger(session)
        assert ledger.balance(ACME) == 500
        kept = ledger.store.get_reservation(held.id)
        assert kept is not None and (kept.status, kept.amount_micro) == ("open", 400)
        assert kept.route == "/v1/responses" and kept.closed_at is None
        assert kept.expires_at - kept.created_at == ttl
        entries = {e.reservation_id: e for e in ledger.store.entries(ACME.type, ACME.id)}
        assert "rsv_short" not in entries and len(entries) == 3  # the grant's, 400 and 100
        first = entries[held.id]
        assert (first.kind, first.amount_micro, first.balance_after_micro) == (
            "reservation",
            -400,
            600,
        )
        assert entries["rsv_fits"].balance_after_micro == 500
        assert first.route == "/v1/responses"
        assert abs(first.created_at - kept.created_at) < timedelta(seconds=5)
        assert ledger.settle(held.id, 150).remaining_micro == 750
    check_invariants(db, ACME)
