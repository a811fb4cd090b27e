"""Reserve → work → settle, or release on any failure: how a billed request spends credits.

`Meter` is the one public verb set for domains: `Meter.reserve`, `meter.settle` (or
`meter.settle_in` inside a unit of work) and `meter.release` (`meter.release_now` on a
worker thread). Work that costs nothing outside this process (a search whose query vector is
cached) may skip the hold: `Meter.ensure_covered` before it, `Meter.charge_in` after it, a
conditional charge that refuses (402) when concurrent spending took the credits meanwhile.

The reservation commits in its own short transaction *before* the expensive call, so no database
lock is held while a model thinks, and a crash mid-call leaves only an open reservation that
expires back to the owner. A request that fails is not charged.

A hold lives as long as its turn: every open `Meter` of this process is listed in `LIVE_HOLDS`,
and the `HoldKeeper` loop (one per process) pushes their expiry forward every third of the TTL,
so a long or stalled turn never sees its hold swept away under it. The same loop releases the
holds of dead turns (any process) once their TTL has passed, at start and then periodically.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import structlog
from sqlalchemy.orm import Session

from sessionary.billing.ledger import Ledger, Owner, Reservation, Settlement, insufficient
from sessionary.kit.db import Database
from sessionary.kit.loop_units import running_here
from sessionary.kit.wal_flush import FLUSH_OWED

log = structlog.get_logger("sessionary.billing")


class LiveHolds:
    """The holds of this process's running requests, by reservation id, kept alive by the
    `HoldKeeper`. Held weakly: a hold whose `Meter` is gone (its request ended without settle
    or release, a bug) stops being extended and expires back to its owner within the TTL,
    instead of being kept alive for as long as the process runs."""

    def __init__(self) -> None:
        self._meters: weakref.WeakValueDictionary[str, Meter] = weakref.WeakValueDictionary()

    def add(self, meter: Meter) -> None:
        self._meters[meter.reservation.id] = meter

    def discard(self, reservation_id: str) -> None:
        self._meters.pop(reservation_id, None)

    def ids(self) -> list[str]:
        return list(self._meters.keys())

    def __contains__(self, reservation_id: object) -> bool:
        return reservation_id in self._meters

    def __len__(self) -> int:
        return len(self._meters)


LIVE_HOLDS = LiveHolds()


def _end_apart(database: Database) -> bool:
    """Whether a turn's end, its own hold already out of `LIVE_HOLDS`, commits apart from its
    WAL flush (`kit/wal_flush.py`): only while other turns of this process are under way, whose
    holds and ends would wait for its balance row through the flush. Alone, a commit that waits
    for the disk is one round trip less: at one client, two workers, p50 6.5 ms against 8.9.
    Never on the event loop (`kit/pg_loop_units.py`): a unit runs there only when alone, and
    waiting for a flush led by a worker would hold the loop."""
    return database.group_flush.apart and len(LIVE_HOLDS) > 0 and not running_here()


def _hold(database: Database, owner: Owner, worst_case_micro: int, route: str) -> Reservation:
    """Reserve in a short transaction of its own; expires after the configured TTL.

    Not durable on PostgreSQL (no wait for the WAL flush, about 4 ms a commit on a local disk):
    a hold is never acknowledged to anyone, and one lost in a database crash is as if it had
    expired (the turn's settle, which is durable, then fails and charges nothing).

    The common hold takes no ORM session (`Ledger.reserve_on`): on PostgreSQL it is one
    statement in autocommit, one round trip instead of six; on SQLite, its three statements on a
    bare connection. When the balance cannot cover it, nothing was written and the hold takes
    the session below, which sweeps expired holds first or refuses (402)."""
    ttl = timedelta(seconds=database.settings.reservation_ttl_seconds)
    bare = database.one_statement if database.dialect == "postgresql" else database.bare_write
    with bare() as connection:
        held = Ledger.reserve_on(
            connection, owner, worst_case_micro, route=route, reservation_ttl=ttl
        )
    if held is not None:
        return held
    with database.session(durable=False) as db:
        return Ledger(db, reservation_ttl=ttl).reserve(owner, worst_case_micro, route=route)


class Meter:
    """One request's hold on its owner's credits, and the only way domains spend them.

    `await Meter.reserve(...)` holds the worst case (402 if the balance cannot), then exactly one
    of `await meter.settle(...)` (charge what was delivered) or `await meter.release()` (the
    request failed: charge nothing). `meter.settle_in(session, ...)` is the settle step for code
    already inside a unit of work, so the charge commits with the request's other writes.
    `Meter.held(...)` wraps the three for a block that must never leave a hold behind.
    `Ledger` is the store-level implementation underneath; domains do not call it to spend.
    """

    def __init__(self, database: Database, reservation: Reservation) -> None:
        self.database = database
        self.reservation = reservation
        self.settlement: Settlement | None = None
        LIVE_HOLDS.add(self)

    @staticmethod
    def hold(database: Database, owner: Owner, worst_case_micro: int, route: str) -> Reservation:
        """`reserve`'s transaction, for code already in a worker thread. Wrap the result in a
        `Meter` back on the event loop: a hold whose turn was cancelled meanwhile is then never
        kept alive, and expires back to its owner."""
        return _hold(database, owner, worst_case_micro, route)

    @staticmethod
    def ensure_covered(session: Session, owner: Owner, micro: int) -> None:
        """402 unless the owner could pay `micro` now (a read: nothing is held)."""
        ledger = Ledger(session)
        if ledger.balance(owner) < micro and (spendable := ledger.spendable(owner)) < micro:
            raise insufficient(micro, spendable)

    @staticmethod
    def charge_in(
        session: Session,
        owner: Owner,
        micro: int,
        *,
        route: str,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """Charge `micro` without a hold, inside the caller's unit of work: one conditional
        balance update, 402 when the balance cannot cover it."""
        return Ledger(session).charge(
            owner, micro, route=route, model=model, usage=usage, subject_id=subject_id
        )

    @classmethod
    async def reserve(
        cls, database: Database, owner: Owner, worst_case_micro: int, *, route: str
    ) -> Meter:
        """Hold `worst_case_micro` before the expensive work, committed off the event loop."""
        reservation = await database.in_worker(
            lambda: _hold(database, owner, worst_case_micro, route)
        )
        return cls(database, reservation)

    @classmethod
    @asynccontextmanager
    async def held(
        cls, database: Database, owner: Owner, worst_case_micro: int, *, route: str
    ) -> AsyncIterator[Meter]:
        """A hold for the duration of the block: leaving it without `settle` (an exception, or
        forgetting) releases the hold."""
        meter = await cls.reserve(database, owner, worst_case_micro, route=route)
        try:
            yield meter
        finally:
            if meter.settlement is None:
                await meter.release()

    async def settle(
        self,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """Charge what was delivered (never more than the hold), in its own unit of work
        (`settle_now`)."""
        return await self.database.in_worker(
            lambda: self.settle_now(actual_micro, model=model, usage=usage, subject_id=subject_id)
        )

    def settle_now(
        self,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """`settle`, for code already on a worker thread (or in a loop unit): its own unit of
        work, on PostgreSQL one statement in autocommit when the charge is within the hold."""
        return self._settle(actual_micro, model, usage, subject_id, None)

    def settle_in(
        self,
        session: Session,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """`settle`, inside the caller's unit of work (called from its worker thread): the
        charge commits, or rolls back, with the request's other writes. `settlement` stays
        None here: the caller sets it once that unit of work has committed (`committed`)."""
        return self._settle(actual_micro, model, usage, subject_id, session)

    def settle_at_once_in(
        self,
        session: Session,
        actual_micro: int,
        *,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> Settlement:
        """`settle_in` as one statement, on PostgreSQL in autocommit (`kit/at_once.py`), when
        the charge is within the hold. The statement fails, writing nothing, when the hold is
        no longer open (the rows sent with it must not be kept without their charge): the
        caller then settles in a transaction. The caller calls `committed` as after
        `settle_in`."""
        LIVE_HOLDS.discard(self.reservation.id)
        apart = _end_apart(self.database)
        settled = Ledger(session).settle_alone(
            self.reservation.id,
            actual_micro,
            model=model,
            usage=usage,
            subject_id=subject_id,
            or_fail=True,
            flush_later=apart,
        )
        session.info[FLUSH_OWED] = apart  # `commit_at_once` then waits for the flush
        assert settled is not None  # or the statement failed
        return settled

    def committed(self, settlement: Settlement) -> None:
        """Record the settlement of a `settle_in` whose unit of work has committed. Set before
        that commit, a commit that then failed left the hold looking settled, and a stream
        that had delivered its deltas was never charged for them (its partial charge saw
        `settlement` and stood down): `tests/test_turn_commit.py -k commit_fails`."""
        self.settlement = settlement

    async def remaining(self) -> int:
        """The owner's balance now, with this hold taken out (what a stream's headers show)."""

        def read() -> int:
            with self.database.session(write=False) as db:
                return Ledger(db).balance(self.reservation.owner)

        return await self.database.in_worker(read)

    async def release(self) -> None:
        """Give the hold back, even when the caller is being cancelled (a client hung up)."""
        with anyio.CancelScope(shield=True):
            await self.database.in_worker(self._release)

    def release_now(self) -> None:
        """`release` for a caller already on a worker thread."""
        self._release()

    def _settle(
        self,
        actual_micro: int,
        model: str | None,
        usage: dict[str, Any] | None,
        subject_id: str | None,
        session: Session | None,
    ) -> Settlement:
        LIVE_HOLDS.discard(self.reservation.id)
        if session is None:
            if self.database.dialect == "postgresql":  # within the hold: one statement
                apart = _end_apart(self.database)
                with self.database.single_statements() as alone:
                    settled = Ledger(alone).settle_alone(
                        self.reservation.id,
                        actual_micro,
                        model=model,
                        usage=usage,
                        subject_id=subject_id,
                        flush_later=apart,
                    )
                    if settled is not None and apart:  # on disk before anyone is told
                        self.database.group_flush.wait(alone.connection())
                if settled is not None:
                    self.settlement = settled
                    return settled
            with self.database.session() as own:
                settled = self._settle(actual_micro, model, usage, subject_id, own)
            self.settlement = settled  # committed
            return settled
        return Ledger(session).settle(
            self.reservation.id, actual_micro, model=model, usage=usage, subject_id=subject_id
        )

    def _release(self) -> None:
        LIVE_HOLDS.discard(self.reservation.id)
        try:
            with self.database.session() as own:
                Ledger(own).release(self.reservation.id)
        except Exception:  # the reservation then expires back to its owner
            log.exception("release_failed", reservation_id=self.reservation.id)


class HoldKeeper:
    """Keeps this process's running holds alive and sweeps back the holds of dead turns."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.ttl = timedelta(seconds=database.settings.reservation_ttl_seconds)
        self.interval = min(max(self.ttl.total_seconds() / 3, 0.5), 60.0)

    def tick(self) -> int:
        """One pass: extend live holds, then release expired ones; how many were released."""
        live = LIVE_HOLDS.ids()
        with self.database.session() as db:
            Ledger(db, reservation_ttl=self.ttl).keep_alive(live)
        released = 0
        while True:  # in batches, each its own short transaction
            with self.database.session() as db:
                batch = Ledger(db, reservation_ttl=self.ttl).release_expired()
            released += batch
            if batch == 0:
                return released

    async def run(self) -> None:
        """Forever (until cancelled with the app): a tick now, then one every interval."""
        while True:
            try:
                released = await anyio.to_thread.run_sync(self.tick)
                if released:
                    log.info("expired_holds_released", count=released)
            except Exception:  # a database hiccup: the next tick tries again
                log.warning("hold_keeper_tick_failed", exc_info=True)
            await anyio.sleep(self.interval)
