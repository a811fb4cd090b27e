"""Random grants, charges, reservations, settlements, releases and failed requests keep the ledger's
invariants: balance = sum of the ledger, balance >= 0, the balance the model predicts, and no
reservation left open once every request has finished."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sessionary.billing.ledger import Ledger, Owner, Reservation
from sessionary.billing.metering import Meter
from sessionary.kit.db import Database
from sessionary.kit.errors import InsufficientCredits
from sessionary.kit.ids import new_id

amounts = st.integers(min_value=1, max_value=5_000)


class Simulated(Exception):
    pass


class LedgerMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.owner = Owner.account(new_id("acct"))
        self.expected = 0
        self.in_flight: dict[str, int] = {}

    @rule(amount=amounts)
    def grant(self, amount: int) -> None:
        with self.db.session() as session:
            Ledger(session).grant(self.owner, amount)
        self.expected += amount

    @rule(amount=amounts)
    def charge(self, amount: int) -> None:
        try:
            with self.db.session() as session:
                Ledger(session).charge(self.owner, amount)
        except InsufficientCredits:
            assert amount > self.expected
            return
        assert amount <= self.expected
        self.expected -= amount

    @rule(target=reservations, amount=amounts)
    def reserve(self, amount: int) -> Reservation | None:
        try:
            with self.db.session() as session:
                held = Ledger(session).reserve(self.owner, amount)
        except InsufficientCredits:
            assert amount > self.expected
            return None
        self.expected -= amount
        self.in_flight[held.id] = amount
        return held

    @rule(held=consumes(reservations), actual=st.integers(min_value=0, max_value=6_000))
    def settle(self, held: Reservation | None, actual: int) -> None:
        if held is None:
            return
        with self.db.session() as session:
            settled = Ledger(session).settle(held.id, actual)
        self.expected += self.in_flight.pop(held.id)
        assert settled.charged_micro == min(actual, self.expected)
        self.expected -= settled.charged_micro

    @rule(held=consumes(reservations))
    def release(self, held: Reservation | None) -> None:
        if held is None:
            return
        with self.db.session() as session:
            Ledger(session).release(held.id)
        self.expected += self.in_flight.pop(held.id)

    @rule(amount=amounts)
    def failed_request(self, amount: int) -> None:
        """A billed request whose provider call fails: reserved, then released, charged nothing."""
        before = self.expected

        async def request() -> None:
            async with Meter.held(self.db, self.owner, amount, route="/v1/probe"):
                raise Simulated

        try:
            anyio.run(request)
        except InsufficientCredits:
            assert amount > before
        except Simulated:
            pass
        assert self.balance() == before

    def balance(self) -> int:
        with self.db.session(write=False) as session:
            return Ledger(session).balance(self.owner)

    @invariant()
    def ledger_matches(self) -> None:
        with self.db.session(write=False) as session:
            ledger = Ledger(session)
            balance = ledger.balance(self.owner)
            assert balance == ledger.ledger_sum(self.owner)
        assert balance >= 0
        assert balance == self.expected

    def teardown(self) -> None:
        for reservation_id in list(self.in_flight):
            with self.db.session() as session:
                Ledger(session).release(reservation_id)
            self.expected += self.in_flight.pop(reservation_id)
        with self.db.session(write=False) as session:
            ledger = Ledger(session)
            assert ledger.store.count_open_reservations() == 0
            assert ledger.balance(self.owner) == ledger.ledger_sum(self.owner) == self.expected


@pytest.mark.slow
def test_ledger_invariants_hold_under_random_operations(db: Database) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(db),
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
