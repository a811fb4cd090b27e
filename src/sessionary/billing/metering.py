"""Reserve → work → settle, or release on any failure: how a billed request spends credits.

The reservation commits in its own short transaction *before* the expensive call, so no database
lock is held while a model thinks, and a crash mid-call leaves only an open reservation that
expires back to the owner. A request that fails is not charged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import structlog
from sqlalchemy.orm import Session

from sessionary.billing.ledger import Ledger, Owner, Reservation, Settlement
from sessionary.kit.db import Database

log = structlog.get_logger("sessionary.billing")


def _hold(db: Database, owner: Owner, worst_case_micro: int, route: str) -> Reservation:
    """Reserve in a short transaction of its own; expires after the configured TTL."""
    ttl = timedelta(seconds=db.settings.reservation_ttl_seconds)
    with db.session() as session:
        return Ledger(session, reservation_ttl=ttl).reserve(owner, worst_case_micro, route=route)


class Meter:
    def __init__(self, db: Database, reservation: Reservation) -> None:
        self.db = db
        self.reservation = reservation
        self.settlement: Settlement | None = None

    def settle(
        self,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        session: Session | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """Charge actual usage; pass `session` to commit it with the request's other writes."""
        if session is not None:
            self.settlement = Ledger(session).settle(
                self.reservation.id, actual_micro, model=model, usage=usage, subject_id=subject_id
            )
        else:
            with self.db.session() as own:
                self.settlement = Ledger(own).settle(
                    self.reservation.id,
                    actual_micro,
                    model=model,
                    usage=usage,
                    subject_id=subject_id,
                )
        return self.settlement

    def release(self) -> None:
        try:
            with self.db.session() as own:
                Ledger(own).release(self.reservation.id)
        except Exception:  # the reservation then expires back to its owner
            log.exception("release_failed", reservation_id=self.reservation.id)


@contextmanager
def metered(db: Database, owner: Owner, worst_case_micro: int, *, route: str) -> Iterator[Meter]:
    """Hold `worst_case_micro` (402 if the balance cannot) for the duration of the block.

    Leaving the block without `settle` - by an exception or by forgetting - releases the hold.
    """
    meter = Meter(db, _hold(db, owner, worst_case_micro, route))
    try:
        yield meter
    finally:
        if meter.settlement is None:
            meter.release()


async def reserve(db: Database, owner: Owner, worst_case_micro: int, *, route: str) -> Meter:
    """The same hold as `metered`, for async code that settles or releases it explicitly."""

    return Meter(
        db, await anyio.to_thread.run_sync(lambda: _hold(db, owner, worst_case_micro, route))
    )


async def release(meter: Meter) -> None:
    """Give the hold back, even when the caller is being cancelled (a client hung up)."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(meter.release)


async def settle(
    meter: Meter,
    actual_micro: int,
    *,
    model: str | None,
    usage: dict[str, Any] | None,
    subject_id: str | None = None,
) -> Settlement:
    """`Meter.settle` in its own transaction, off the event loop."""
    return await anyio.to_thread.run_sync(
        lambda: meter.settle(actual_micro, model=model, usage=usage, subject_id=subject_id)
    )


async def balance_of(db: Database, owner: Owner) -> int:
    def read() -> int:
        with db.session(write=False) as session:
            return Ledger(session).balance(owner)

    return await anyio.to_thread.run_sync(read)
