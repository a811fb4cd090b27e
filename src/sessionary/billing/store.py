"""SQL for balances, the ledger, reservations and idempotency records.

Balance changes are single conditional UPDATEs (`... WHERE balance_micro >= :amount RETURNING`):
atomic on both engines, so racing spenders can never both pass a check they would jointly fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from sessionary.billing.models import (
    CreditBalance,
    CreditReservation,
    IdempotencyRecord,
    LedgerEntry,
)
from sessionary.kit.models import utcnow
from sessionary.kit.sql import insert_ignoring_conflict


class LedgerStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def ensure_balance(self, owner_type: str, owner_id: str, account_id: str) -> None:
        values = {
            "owner_type": owner_type,
            "owner_id": owner_id,
            "account_id": account_id,
            "balance_micro": 0,
            "updated_at": utcnow(),
        }
        insert_ignoring_conflict(self.session, CreditBalance, values)

    def get_balance(self, owner_type: str, owner_id: str) -> CreditBalance | None:
        return self.session.get(CreditBalance, (owner_type, owner_id), populate_existing=True)

    def add_to_balance(
        self, owner_type: str, owner_id: str, delta_micro: int, *, top_up_entry_id: str | None
    ) -> int | None:
        """Apply a change unless it would take the balance below zero; the new balance or None."""
        values: dict[str, object] = {
            "balance_micro": CreditBalance.balance_micro + delta_micro,
            "updated_at": utcnow(),
        }
        if top_up_entry_id is not None:
            values["last_top_up_entry_id"] = top_up_entry_id
        stmt = (
            update(CreditBalance)
            .where(CreditBalance.owner_type == owner_type)
            .where(CreditBalance.owner_id == owner_id)
            .values(**values)
            .returning(CreditBalance.balance_micro)
        )
        if delta_micro < 0:
            stmt = stmt.where(CreditBalance.balance_micro >= -delta_micro)
        new_balance = self.session.execute(stmt).scalar_one_or_none()
        return None if new_balance is None else int(new_balance)

    def append(self, entry: LedgerEntry) -> None:
        self.session.execute(
            insert(LedgerEntry).values(
                {c.name: getattr(entry, c.key) for c in LedgerEntry.__table__.columns}
            )
        )

    def entry(self, entry_id: str) -> LedgerEntry | None:
        return self.session.get(LedgerEntry, entry_id)

    def ledger_sum(self, owner_type: str, owner_id: str) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_micro), 0))
            .where(LedgerEntry.owner_type == owner_type)
            .where(LedgerEntry.owner_id == owner_id)
        )
        return int(total or 0)

    def totals(self, owner_type: str, owner_id: str) -> list[tuple[str, int, int, datetime | None]]:
        rows = self.session.execute(
            select(
                LedgerEntry.kind,
                func.count(),
                func.coalesce(func.sum(LedgerEntry.amount_micro), 0),
                func.max(LedgerEntry.created_at),
            )
            .where(LedgerEntry.owner_type == owner_type)
            .where(LedgerEntry.owner_id == owner_id)
            .group_by(LedgerEntry.kind)
        )
        return [(str(k), int(c), int(a), latest) for k, c, a, latest in rows]

    def entries(self, owner_type: str, owner_id: str, limit: int = 100) -> list[LedgerEntry]:
        return list(
            self.session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.owner_type == owner_type)
                .where(LedgerEntry.owner_id == owner_id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
        )

    def add_reservation(self, reservation: CreditReservation) -> None:
        self.session.add(reservation)
        self.session.flush()

    def close_reservation(self, reservation_id: str, status: str) -> CreditReservation | None:
        """Mark an open reservation closed; None when it was not open (already settled/released).

        The status condition makes settle and release race-safe: exactly one of them wins.
        """
        closed = self.session.execute(
            update(CreditReservation)
            .where(CreditReservation.id == reservation_id)
            .where(CreditReservation.status == "open")
            .values(status=status, closed_at=utcnow())
            .returning(CreditReservation.id)
        ).scalar_one_or_none()
        if closed is None:
            return None
        return self.session.get(CreditReservation, reservation_id, populate_existing=True)

    def get_reservation(self, reservation_id: str) -> CreditReservation | None:
        return self.session.get(CreditReservation, reservation_id, populate_existing=True)

    def expired_open_reservations(
        self, now: datetime, owner: tuple[str, str] | None = None, limit: int = 100
    ) -> list[str]:
        query = (
            select(CreditReservation.id)
            .where(CreditReservation.status == "open")
            .where(CreditReservation.expires_at < now)
            .limit(limit)
        )
        if owner is not None:
            query = query.where(CreditReservation.owner_type == owner[0]).where(
                CreditReservation.owner_id == owner[1]
            )
        return list(self.session.scalars(query))

    def count_open_reservations(self) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(CreditReservation)
                .where(CreditReservation.status == "open")
            )
            or 0
        )


class IdempotencyStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, scope: str, key: str) -> IdempotencyRecord | None:
        return self.session.get(IdempotencyRecord, (scope, key), populate_existing=True)

    def try_insert(self, record: IdempotencyRecord) -> bool:
        """Insert unless the (scope, key) exists; True when this call created it."""
        values = {c.name: getattr(record, c.key) for c in IdempotencyRecord.__table__.columns}
        return insert_ignoring_conflict(self.session, IdempotencyRecord, values)

    def take_over(
        self, scope: str, key: str, *, stale_before: datetime, values: Mapping[str, object]
    ) -> bool:
        """Reclaim a record whose answer expired or whose running request was abandoned."""
        result = self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
            .where(
                (IdempotencyRecord.expires_at < stale_before)
                | (
                    (IdempotencyRecord.state == "running")
                    & (IdempotencyRecord.lease_until < stale_before)
                )
            )
            .values(**values)
        )
        return bool(getattr(result, "rowcount", 0))

    def complete(self, scope: str, key: str, status: int, headers: str, body: bytes) -> None:
        self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
            .values(state="done", status_code=status, headers=headers, body=body)
        )

    def remove(self, scope: str, key: str) -> None:
        self.session.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
        )

    def purge_expired(self, now: datetime) -> int:
        result = self.session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
        )
        return int(getattr(result, "rowcount", 0))
