"""The credits ledger: every movement is an entry, and the cached balance moves with it.

Invariants, held by the database and not by good intentions:
- the balance equals the sum of the owner's ledger entries (both change in one transaction);
- the balance is never negative (a CHECK constraint, and conditional UPDATEs that refuse first);
- entries are never rewritten (triggers refuse UPDATE and DELETE on the ledger);
- a reservation is closed once: settle and release race on `status = 'open'`, one wins.

Methods only flush; the caller's unit of work commits. The hot path is lean: a reserve is one
balance UPDATE and two INSERTs, a settle one reservation UPDATE, one balance UPDATE (hold back,
charge out) and one ledger INSERT of its two entries. On PostgreSQL each is one statement with
data-modifying CTEs (`reserve_on`, and `settle` through `LedgerStore.settle_at_once`): the same
rows under the same conditions, and whatever the one statement cannot do (a balance that refuses)
goes on through the statements above. The HoldKeeper sweeps holds of dead turns, and a spender does
only when the balance would otherwise refuse it: no reserve pays for a sweep that finds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.billing import telemetry
from sessionary.billing.models import LedgerEntry
from sessionary.billing.money import format_credits
from sessionary.billing.store import LedgerStore, hold_at_once, hold_in
from sessionary.kit.errors import InsufficientCredits, InvalidRequest, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow
from sessionary.kit.request_context import current_request_id

EntryKind = Literal["grant", "charge", "refund", "reservation", "release"]
DEFAULT_RESERVATION_TTL = timedelta(minutes=15)
MAX_MICRO = 2**63 - 1  # the columns' range (BIGINT, SQLite's INTEGER)


@dataclass(frozen=True)
class Owner:
    """Whose credits: an account, or an external user (a sub-tenant of `account_id`)."""

    type: str  # "account" | "external_user"
    id: str
    account_id: str

    @classmethod
    def account(cls, account_id: str) -> Owner:
        return cls("account", account_id, account_id)

    @classmethod
    def external_user(cls, external_user_id: str, account_id: str) -> Owner:
        return cls("external_user", external_user_id, account_id)

    @property
    def party(self) -> str:
        """The owner as one string, for what is kept apart by owner (upstream connections)."""
        return f"{self.type}:{self.id}"

    @classmethod
    def of(cls, caller: Principal) -> Owner:
        """Who pays for a caller's request: its external user when it has one, else the account."""
        if caller.external_user_id is not None:
            return cls.external_user(caller.external_user_id, caller.account_id)
        return cls.account(caller.account_id)


@dataclass(frozen=True)
class Reservation:
    id: str
    owner: Owner
    amount_micro: int


@dataclass(frozen=True)
class KindTotal:
    count: int
    amount_micro: int
    latest: datetime | None


@dataclass(frozen=True)
class Settlement:
    charged_micro: int
    remaining_micro: int


def _chargeable(actual_micro: int) -> int:
    """A settle's charge within the columns' range: no balance holds more than a BIGINT, so a
    larger charge is refused as any charge the balance cannot cover is, and then takes what
    there is (a value past the range would be a database error)."""
    return min(max(actual_micro, 0), MAX_MICRO)


def insufficient(needed_micro: int, balance_micro: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"Insufficient credits: this request needs {format_credits(needed_micro)} credits and "
        f"the balance is {format_credits(balance_micro)}.",
        headers={"x-credits-remaining": format_credits(balance_micro)},
    )


class Ledger:
    def __init__(
        self, db: Session, *, reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL
    ) -> None:
        self.store = LedgerStore(db)
        self.reservation_ttl = reservation_ttl

    # Reading

    def balance(self, owner: Owner) -> int:
        return self.store.balance_micro(owner.type, owner.id)

    def spendable(self, owner: Owner) -> int:
        """The balance as a reader should see it: holds of dead turns past their TTL count as
        returned even before the sweep has released them (a read never writes)."""
        expired = self.store.expired_hold_micro(owner.type, owner.id, utcnow())
        return self.balance(owner) + expired

    def last_top_up(self, owner: Owner) -> LedgerEntry | None:
        row = self.store.get_balance(owner.type, owner.id)
        if row is None or row.last_top_up_entry_id is None:
            return None
        return self.store.entry(row.last_top_up_entry_id)

    def ledger_sum(self, owner: Owner) -> int:
        return self.store.ledger_sum(owner.type, owner.id)

    def totals(self, owner: Owner) -> dict[str, KindTotal]:
        """Per entry kind: how many entries, their summed amount and the latest one's time."""
        return {
            kind: KindTotal(count, amount, latest)
            for kind, count, amount, latest in self.store.totals(owner.type, owner.id)
        }

    # Moving credits

    def open_account(self, owner: Owner) -> None:
        """Make sure the owner has a balance row (zero) so charges can find it."""
        self.store.ensure_balance(owner.type, owner.id, owner.account_id)

    def grant(self, owner: Owner, micro: int, *, note: str | None = None) -> int:
        if micro <= 0:
            raise InvalidRequest("A grant must be a positive amount of credits.", param="credits")
        self.open_account(owner)
        return self._move(owner, "grant", micro, note=note, top_up=True)

    def refund(self, owner: Owner, micro: int, *, note: str | None = None) -> int:
        if micro <= 0:
            raise InvalidRequest("A refund must be a positive amount of credits.", param="credits")
        self.open_account(owner)
        return self._move(owner, "refund", micro, note=note)

    def charge(
        self,
        owner: Owner,
        micro: int,
        *,
        route: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """Charge now, or 402 when the balance cannot cover it."""
        if micro < 0:
            raise ValueError("a charge is not negative")
        if micro == 0:
            return Settlement(0, self.balance(owner))
        remaining = self._sweeping_if_short(
            owner,
            lambda: self._move(
                owner,
                "charge",
                -micro,
                route=route,
                model=model,
                usage=usage,
                subject_id=subject_id,
            ),
        )
        return Settlement(micro, remaining)

    def reserve(self, owner: Owner, micro: int, *, route: str | None = None) -> Reservation:
        """Set aside the worst case of a request before the expensive work, or 402."""
        if micro < 0:
            raise ValueError("a reservation is not negative")
        reservation = _reservation_row(owner, micro, route, self.reservation_ttl)
        self._sweeping_if_short(
            owner,
            lambda: self._move(
                owner, "reservation", -micro, route=route, reservation_id=reservation["id"]
            ),
        )
        self.store.add_reservation(reservation)
        return Reservation(reservation["id"], owner, micro)

    @classmethod
    def reserve_on(
        cls,
        connection: Connection,
        owner: Owner,
        micro: int,
        *,
        route: str | None = None,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
    ) -> Reservation | None:
        """`reserve` on `connection`, with no session around it: the balance update, its ledger
        entry and the reservation. On PostgreSQL one statement in autocommit
        (`Database.one_statement`), atomic as any statement, and committed without waiting for
        the disk (a hold may be lost in a crash: see `metering._hold`); on SQLite three in the
        connection's write transaction (`Database.bare_write`). None when the balance cannot
        cover it: nothing was written, and the caller takes `reserve`, which sweeps the
        owner's expired holds or refuses (402)."""
        if micro < 0:
            raise ValueError("a reservation is not negative")
        reservation = _reservation_row(owner, micro, route, reservation_ttl)
        entry = cls._entry(
            owner, "reservation", -micro, 0, route=route, reservation_id=reservation["id"]
        )
        hold = hold_at_once if connection.dialect.name == "postgresql" else hold_in
        if hold(connection, entry, reservation) is None:
            return None
        return Reservation(reservation["id"], owner, micro)

    def settle(
        self,
        reservation_id: str,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """Turn a reservation into the actual charge: release it, then charge what was used.

        The charge never exceeds what the owner has after the release (the reservation was the
        agreed worst case); a reservation already released by expiry is charged from the balance
        as far as it goes; one already settled is not charged again (a second settle is a no-op).
        """
        actual_micro = _chargeable(actual_micro)
        if self.store.writes_at_once:  # PostgreSQL: the common settle is one statement
            row = self.store.settle_at_once(
                reservation_id, actual_micro, self._entry_ids_and_details(model, usage, subject_id)
            )
            if row is not None and row.balance_micro is not None:
                return self._settled(row, actual_micro, row.balance_micro)
        else:
            row = self.store.close_reservation(reservation_id, "settled")
            if row is not None:
                settled = self._settle_at_once(row, actual_micro, model, usage, subject_id)
                if settled is not None:
                    return settled
        if row is None:
            existing = self.store.get_reservation(reservation_id)
            if existing is None:
                raise NotFound(f"No reservation '{reservation_id}'.")
            if existing.status == "settled":  # settled once already: never charge twice
                owner = Owner(existing.owner_type, existing.owner_id, existing.account_id)
                return Settlement(0, self.balance(owner))
            owner = Owner(existing.owner_type, existing.owner_id, existing.account_id)
            route = existing.route
            available = self.balance(owner)
        else:
            owner = Owner(row.owner_type, row.owner_id, row.account_id)
            route = row.route
            available = self._move(
                owner, "release", row.amount_micro, route=route, reservation_id=row.id
            )
        charge = min(max(actual_micro, 0), available)
        if charge == 0:
            return Settlement(0, available)
        remaining = self._move(
            owner,
            "charge",
            -charge,
            route=route,
            model=model,
            usage=usage,
            reservation_id=reservation_id,
            subject_id=subject_id,
        )
        return Settlement(charge, remaining)

    def settle_alone(
        self,
        reservation_id: str,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
        or_fail: bool = False,
        flush_later: bool = False,
    ) -> Settlement | None:
        """PostgreSQL, on a session in autocommit (`Database.single_statements`): the settle as
        one statement, which writes all of it or nothing, when the charge is within the hold;
        None, with nothing written, when the reservation is not open or the charge is larger
        (`settle` in a transaction then sorts it out), or with `or_fail` the statement fails
        (`kit/at_once.py`). BEGIN and COMMIT cost two round trips of the four a settle alone
        took. `flush_later`: the statement commits without waiting for the disk, and the
        caller waits for it before telling anyone (`kit/wal_flush.py`)."""
        actual_micro = _chargeable(actual_micro)
        row = self.store.settle_at_once(
            reservation_id,
            actual_micro,
            self._entry_ids_and_details(model, usage, subject_id),
            within_hold=True,
            or_fail=or_fail,
            flush_later=flush_later,
        )
        if row is None:
            return None
        return self._settled(row, actual_micro, row.balance_micro)

    @staticmethod
    def _entry_ids_and_details(
        model: str | None, usage: dict[str, Any] | None, subject_id: str | None
    ) -> dict[str, Any]:
        """What a one-statement settle's two entries take from the caller (the rest comes
        from the reservation it closes), as `_entry` would fill it in."""
        return {
            "p_release_id": new_id("led"),
            "p_charge_id": new_id("led"),
            "p_request_id": current_request_id(),
            "p_model": model,
            "p_usage": json.dumps(usage, sort_keys=True) if usage is not None else None,
            "p_subject_id": subject_id,
        }

    def _settled(self, row: Any, charge: int, remaining: int) -> Settlement:
        if charge:
            telemetry.note(self.store.db, "charge", row.owner_type, row.route, -charge)
        return Settlement(charge, remaining)

    def _settle_at_once(
        self,
        row: Any,
        charge: int,
        model: str | None,
        usage: dict[str, Any] | None,
        subject_id: str | None,
    ) -> Settlement | None:
        """The common settle: the hold back and the charge out in one conditional balance
        UPDATE and one INSERT of both entries (a release, then the charge). None when the balance
        with the hold back cannot cover the charge: the caller then charges what there is."""
        owner = Owner(row.owner_type, row.owner_id, row.account_id)
        remaining = self.store.add_to_balance(
            owner.type, owner.id, row.amount_micro - charge, top_up_entry_id=None
        )
        if remaining is None:
            return None
        release = self._entry(
            owner,
            "release",
            row.amount_micro,
            remaining + charge,
            route=row.route,
            reservation_id=row.id,
        )
        if charge == 0:
            self.store.append(release)
            return Settlement(0, remaining)
        telemetry.note(self.store.db, "charge", owner.type, row.route, -charge)
        self.store.append(
            release,
            self._entry(
                owner,
                "charge",
                -charge,
                remaining,
                route=row.route,
                model=model,
                usage=usage,
                reservation_id=row.id,
                subject_id=subject_id,
            ),
        )
        return Settlement(charge, remaining)

    def release(self, reservation_id: str) -> int | None:
        """Give a reservation back (the request failed); None when it was already closed."""
        row = self.store.close_reservation(reservation_id, "released")
        if row is None:
            return None
        owner = Owner(row.owner_type, row.owner_id, row.account_id)
        return self._move(
            owner, "release", row.amount_micro, route=row.route, reservation_id=row.id
        )

    def keep_alive(self, reservation_ids: list[str]) -> int:
        """Push the expiry of holds whose turns are still running one TTL further."""
        return self.store.extend_reservations(reservation_ids, utcnow() + self.reservation_ttl)

    def release_expired(self, owner: Owner | None = None) -> int:
        """Release reservations whose request died without settling (a crash, a kill -9)."""
        owner_key = (owner.type, owner.id) if owner else None
        expired = self.store.expired_open_reservations(utcnow(), owner_key)
        return sum(1 for rid in expired if self.release(rid) is not None)

    def _move(
        self,
        owner: Owner,
        kind: EntryKind,
        amount_micro: int,
        *,
        route: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        note: str | None = None,
        reservation_id: str | None = None,
        top_up: bool = False,
        subject_id: str | None = None,
    ) -> int:
        entry = self._entry(
            owner,
            kind,
            amount_micro,
            0,
            route=route,
            model=model,
            usage=usage,
            note=note,
            reservation_id=reservation_id,
            subject_id=subject_id,
        )
        remaining = self.store.add_to_balance(
            owner.type, owner.id, amount_micro, top_up_entry_id=entry["id"] if top_up else None
        )
        if remaining is None:
            raise insufficient(-amount_micro, self.balance(owner))
        telemetry.note(self.store.db, kind, owner.type, route, amount_micro)
        entry["balance_after_micro"] = remaining
        self.store.append(entry)
        return remaining

    def _sweeping_if_short(self, owner: Owner, spend: Callable[[], int]) -> int:
        """Spend; when the balance refuses, give back the owner's expired holds and try once
        more (a dead turn's hold never keeps its owner from spending past its TTL)."""
        try:
            return spend()
        except InsufficientCredits:
            if not self.release_expired(owner):
                raise
        return spend()

    @staticmethod
    def _entry(
        owner: Owner,
        kind: EntryKind,
        amount_micro: int,
        balance_after_micro: int,
        *,
        route: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        note: str | None = None,
        reservation_id: str | None = None,
        subject_id: str | None = None,
    ) -> dict[str, Any]:
        """One ledger row as {column: value}."""
        return {
            "id": new_id("led"),
            "owner_type": owner.type,
            "owner_id": owner.id,
            "account_id": owner.account_id,
            "kind": kind,
            "amount_micro": amount_micro,
            "balance_after_micro": balance_after_micro,
            "reservation_id": reservation_id,
            "request_id": current_request_id(),
            "route": route,
            "model": model,
            "usage": json.dumps(usage, sort_keys=True) if usage is not None else None,
            "note": note,
            "subject_id": subject_id,
            "created_at": utcnow(),
        }


def _reservation_row(owner: Owner, micro: int, route: str | None, ttl: timedelta) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id("rsv"),
        "owner_type": owner.type,
        "owner_id": owner.id,
        "account_id": owner.account_id,
        "amount_micro": micro,
        "status": "open",
        "request_id": current_request_id(),
        "route": route,
        "created_at": now,
        "expires_at": now + ttl,
        "closed_at": None,
    }
