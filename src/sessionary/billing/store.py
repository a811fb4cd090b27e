"""SQL for balances, the ledger and reservations (idempotency records: `idempotency_store.py`).

Balance changes are single conditional UPDATEs (`... WHERE balance_micro >= :amount RETURNING`):
atomic on both engines, so racing spenders can never both pass a check they would jointly fail.

The statements every billed request runs are built once, at import, from the tables with bound
parameters, and run on the DB-API cursor of the session's connection (`kit/raw_sql.py`): building
an ORM statement per call cost ten times the database's own work, the session's execute path
(ORM compile plugin, events) about as much again as the connection's, and the connection's
execution context still several times the cursor call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import product
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    true,
    update,
)

from sessionary.billing.models import (
    CreditBalance,
    CreditReservation,
    LedgerEntry,
)
from sessionary.kit.models import UtcDateTime, utcnow
from sessionary.kit.pagination import PageParams
from sessionary.kit.raw_sql import run
from sessionary.kit.sql import insert_ignoring_conflict
from sessionary.kit.store import Store, page

_BALANCES = cast(Table, CreditBalance.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)
_RESERVATIONS = cast(Table, CreditReservation.__table__)


def _owned(table: Any) -> Any:
    return (table.c.owner_type == bindparam("p_owner_type")) & (
        table.c.owner_id == bindparam("p_owner_id")
    )


_ADD = (
    update(_BALANCES)
    .where(_owned(_BALANCES))
    .values(
        balance_micro=_BALANCES.c.balance_micro + bindparam("p_delta"),
        updated_at=bindparam("p_now", type_=UtcDateTime()),
    )
    .returning(_BALANCES.c.balance_micro)
)
_SPEND = _ADD.where(_BALANCES.c.balance_micro >= bindparam("p_needed"))
_TOP_UP = _ADD.values(last_top_up_entry_id=bindparam("p_entry_id"))
_BALANCE = select(_BALANCES.c.balance_micro).where(_owned(_BALANCES))
_APPEND = insert(_LEDGER)
_RESERVE = insert(_RESERVATIONS)
_CLOSE = (
    update(_RESERVATIONS)
    .where(_RESERVATIONS.c.id == bindparam("p_id"))
    .where(_RESERVATIONS.c.status == "open")
    .values(status=bindparam("p_status"), closed_at=bindparam("p_now", type_=UtcDateTime()))
    .returning(*_RESERVATIONS.c)
)


def _hold_at_once() -> Any:
    """A hold's three writes in one statement, for PostgreSQL (data-modifying CTEs, which
    SQLite lacks): the conditional balance UPDATE, then, from its RETURNING row (none when the
    balance cannot cover it, and then nothing is written), the ledger entry and the
    reservation. `set_config(..., true)` turns `synchronous_commit` off for this statement's
    transaction only, as `SET LOCAL` does for `Database.session(durable=False)`."""
    spent = _SPEND.cte("spent")

    def rows_from(table: Table, prefix: str, **computed: Any) -> Any:
        columns = list(table.c)
        values = [
            computed.get(column.key, bindparam(f"{prefix}{column.key}", type_=column.type))
            for column in columns
        ]
        return insert(table).from_select(columns, select(*values).select_from(spent))

    entry = rows_from(_LEDGER, "e_", balance_after_micro=spent.c.balance_micro).cte("entry")
    held = rows_from(_RESERVATIONS, "r_").cte("held")
    return select(
        spent.c.balance_micro,
        func.set_config("synchronous_commit", "off", True).label("synchronous_commit"),
    ).add_cte(entry, held)


_HOLD_AT_ONCE = _hold_at_once()


def _settle_at_once(within_hold: bool, or_fail: bool, flush_later: bool) -> Any:
    """A settle's writes in one statement, for PostgreSQL: close the reservation if it is
    open; from its row, give the hold back and take the charge out in one conditional balance
    UPDATE (none when the balance with the hold back cannot cover the charge); from both rows,
    the release entry and, for a charge above zero, the charge entry. Answers the closed
    reservation with the balance after (NULL when the balance refused), or nothing when the
    reservation was not open: what `Ledger.settle` then goes on from, as after `_CLOSE`.

    `within_hold`: the reservation is closed only if the charge is at most its amount. Then
    the balance cannot refuse (it never goes below zero, and gets back at least the charge),
    so the statement writes all or nothing and may run alone, in autocommit. `or_fail`: the
    statement fails instead of answering nothing ("no open hold to settle"), so that the rows
    sent in the same statement are not kept without their charge (`kit/at_once.py`).
    `flush_later`: it commits without waiting for the disk; the caller waits (`kit/wal_flush`)."""
    charge = bindparam("p_charge", type_=BigInteger())
    closing = _CLOSE.where(_RESERVATIONS.c.amount_micro >= charge) if within_hold else _CLOSE
    closed = closing.cte("closed")
    columns = list(_LEDGER.c)
    moved = (
        update(_BALANCES)
        .where(_BALANCES.c.owner_type == closed.c.owner_type)
        .where(_BALANCES.c.owner_id == closed.c.owner_id)
        .where(_BALANCES.c.balance_micro + closed.c.amount_micro - charge >= 0)
        .values(
            balance_micro=_BALANCES.c.balance_micro + closed.c.amount_micro - charge,
            updated_at=bindparam("p_now", type_=UtcDateTime()),
        )
        .returning(_BALANCES.c.balance_micro)
        .cte("moved")
    )

    def entry(kind: str, **values: Any) -> Any:
        common = {
            "owner_type": closed.c.owner_type,
            "owner_id": closed.c.owner_id,
            "account_id": closed.c.account_id,
            "kind": literal(kind, String()),
            "reservation_id": closed.c.id,
            "request_id": bindparam("p_request_id", type_=String()),
            "route": closed.c.route,
            "created_at": bindparam("p_now", type_=UtcDateTime()),
        }
        row = common | values
        chosen = [row.get(column.key, null()) for column in columns]
        return select(*chosen).select_from(closed).join(moved, true())

    released = entry(
        "release",
        id=bindparam("p_release_id", type_=String()),
        amount_micro=closed.c.amount_micro,
        balance_after_micro=moved.c.balance_micro + charge,
    )
    charged = entry(
        "charge",
        id=bindparam("p_charge_id", type_=String()),
        amount_micro=-charge,
        balance_after_micro=moved.c.balance_micro,
        model=bindparam("p_model", type_=String()),
        usage=bindparam("p_usage", type_=Text()),
        subject_id=bindparam("p_subject_id", type_=String()),
    ).where(charge > 0)
    entries = insert(_LEDGER).from_select(columns, released.union_all(charged)).cte("entries")
    answer = [closed.c[name] for name in ("id", "owner_type", "owner_id", "account_id")]
    answer += [closed.c.amount_micro, closed.c.route, moved.c.balance_micro]
    if flush_later:
        answer.append(func.set_config("synchronous_commit", "off", True).label("flush_later"))
    if not or_fail:
        return select(*answer).select_from(closed).outerjoin(moved, true()).add_cte(entries)
    # one row whatever happens, whose cast fails at run time when no hold was closed (a cast
    # of a constant would be evaluated, and fail, when the statement is planned)
    settled = sa.case((closed.c.id.is_(None), literal("no open hold to settle")), else_="1")
    one = select(literal(1).label("one")).subquery("one")
    joined = one.outerjoin(closed, true()).outerjoin(moved, true())
    guard = sa.cast(settled, sa.Integer).label("settled")
    return select(*answer, guard).select_from(joined).add_cte(entries)


_SETTLES = {flags: _settle_at_once(*flags) for flags in product((False, True), repeat=3)}
_EXPIRED = (
    select(_RESERVATIONS.c.id)
    .where(_owned(_RESERVATIONS))
    .where(_RESERVATIONS.c.status == "open")
    .where(_RESERVATIONS.c.expires_at < bindparam("p_now", type_=UtcDateTime()))
    .limit(100)
)


def _spend_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `_SPEND` (and `_HOLD_AT_ONCE`'s) for a hold's ledger entry."""
    return {
        "p_owner_type": entry["owner_type"],
        "p_owner_id": entry["owner_id"],
        "p_delta": entry["amount_micro"],
        "p_needed": -entry["amount_micro"],
        "p_now": entry["created_at"],
    }


def hold_at_once(connection: Connection, entry: dict[str, Any], reservation: dict[str, Any]) -> Any:
    """PostgreSQL (`_HOLD_AT_ONCE`), in autocommit: take `entry`'s amount off the balance and
    insert `entry` (its balance after filled in) and `reservation`, in one statement: the row
    (balance after, `synchronous_commit`), or None when the balance refuses (nothing written)."""
    params = _spend_of(entry)
    params |= {f"e_{key}": value for key, value in entry.items()}
    params |= {f"r_{key}": value for key, value in reservation.items()}
    return run(connection, _HOLD_AT_ONCE, params).first()


def hold_in(connection: Connection, entry: dict[str, Any], reservation: dict[str, Any]) -> Any:
    """SQLite: `hold_at_once` as three statements in `connection`'s write transaction: the
    balance after, or None when the balance refuses (nothing written)."""
    remaining = run(connection, _SPEND, _spend_of(entry)).scalar_one_or_none()
    if remaining is None:
        return None
    run(connection, _APPEND, {**entry, "balance_after_micro": int(remaining)})
    run(connection, _RESERVE, reservation)
    return int(remaining)


class LedgerStore(Store):
    _conn: Connection | None = None

    @property
    def conn(self) -> Connection:
        """The unit of work's own connection (its transaction): Core statements run here.

        Kept between statements: asking the session for it again cost about as much as a
        statement. A commit or rollback of the session closes it, and the next call asks anew.
        """
        if self._conn is None or self._conn.closed:
            self._conn = self.db.connection()
        return self._conn

    def ensure_balance(self, owner_type: str, owner_id: str, account_id: str) -> None:
        values = {
            "owner_type": owner_type,
            "owner_id": owner_id,
            "account_id": account_id,
            "balance_micro": 0,
            "updated_at": utcnow(),
        }
        insert_ignoring_conflict(self.db, CreditBalance, values)

    def get_balance(self, owner_type: str, owner_id: str) -> CreditBalance | None:
        return self.db.get(CreditBalance, (owner_type, owner_id), populate_existing=True)

    def balance_micro(self, owner_type: str, owner_id: str) -> int:
        found = run(
            self.conn, _BALANCE, {"p_owner_type": owner_type, "p_owner_id": owner_id}
        ).scalar_one_or_none()
        return int(found or 0)

    def add_to_balance(
        self, owner_type: str, owner_id: str, delta_micro: int, *, top_up_entry_id: str | None
    ) -> int | None:
        """Apply a change unless it would take the balance below zero; the new balance or None."""
        params: dict[str, object] = {
            "p_owner_type": owner_type,
            "p_owner_id": owner_id,
            "p_delta": delta_micro,
            "p_now": utcnow(),
        }
        if top_up_entry_id is not None:
            stmt, params["p_entry_id"] = _TOP_UP, top_up_entry_id
        elif delta_micro < 0:
            stmt, params["p_needed"] = _SPEND, -delta_micro
        else:
            stmt = _ADD
        new_balance = run(self.conn, stmt, params).scalar_one_or_none()
        return None if new_balance is None else int(new_balance)

    def append(self, *entries: dict[str, Any]) -> None:
        """Ledger rows, each given as {column: value} for every column, in one statement."""
        run(self.conn, _APPEND, list(entries) if len(entries) > 1 else entries[0])

    def entry(self, entry_id: str) -> LedgerEntry | None:
        return self.db.get(LedgerEntry, entry_id)

    def ledger_sum(self, owner_type: str, owner_id: str) -> int:
        total = self.db.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_micro), 0))
            .where(LedgerEntry.owner_type == owner_type)
            .where(LedgerEntry.owner_id == owner_id)
        )
        return int(total or 0)

    def totals(self, owner_type: str, owner_id: str) -> list[tuple[str, int, int, datetime | None]]:
        rows = self.db.execute(
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
            self.db.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.owner_type == owner_type)
                .where(LedgerEntry.owner_id == owner_id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
        )

    @property
    def writes_at_once(self) -> bool:
        """Whether this database takes a settle as one statement (`settle_at_once`)."""
        return self.conn.dialect.name == "postgresql"

    def settle_at_once(
        self,
        reservation_id: str,
        charge_micro: int,
        details: dict[str, Any],
        *,
        within_hold: bool = False,
        or_fail: bool = False,
        flush_later: bool = False,
    ) -> Any | None:
        """PostgreSQL only (`_settle_at_once`): the closed reservation's row with the balance
        after the settle (None in `balance_micro` when the balance refused the charge: the
        reservation is closed, nothing else written), or None when it was not open.
        `within_hold`: also None, with nothing written, when the charge is larger than the
        reservation; the balance after is then always there. `flush_later`: `_settle_at_once`."""
        params = {"p_id": reservation_id, "p_status": "settled", "p_now": utcnow()}
        params |= {"p_charge": charge_micro, **details}
        statement = _SETTLES[within_hold or or_fail, or_fail, within_hold and flush_later]
        return run(self.conn, statement, params).first()

    def add_reservation(self, reservation: dict[str, Any]) -> None:
        run(self.conn, _RESERVE, reservation)

    def close_reservation(self, reservation_id: str, status: str) -> Any | None:
        """Mark an open reservation closed and return its row; None when it was not open.

        The status condition makes settle and release race-safe: exactly one of them wins.
        """
        return run(
            self.conn, _CLOSE, {"p_id": reservation_id, "p_status": status, "p_now": utcnow()}
        ).first()

    def get_reservation(self, reservation_id: str) -> CreditReservation | None:
        return self.db.get(CreditReservation, reservation_id, populate_existing=True)

    def expired_open_reservations(
        self, now: datetime, owner: tuple[str, str] | None = None
    ) -> list[str]:
        if owner is not None:
            params = {"p_owner_type": owner[0], "p_owner_id": owner[1], "p_now": now}
            return list(run(self.conn, _EXPIRED, params).scalars())
        query = (
            select(CreditReservation.id)
            .where(CreditReservation.status == "open")
            .where(CreditReservation.expires_at < now)
            .limit(100)
        )
        return list(self.db.scalars(query))

    def extend_reservations(self, ids: list[str], until: datetime) -> int:
        """Push back the expiry of open reservations whose turns are still running."""
        if not ids:
            return 0
        result = self.db.execute(
            update(CreditReservation)
            .where(CreditReservation.id.in_(ids))
            .where(CreditReservation.status == "open")
            .values(expires_at=until)
        )
        return int(getattr(result, "rowcount", 0))

    def expired_hold_micro(self, owner_type: str, owner_id: str, now: datetime) -> int:
        """What an owner's open reservations past their expiry still hold (to be swept back)."""
        total = self.db.scalar(
            select(func.coalesce(func.sum(CreditReservation.amount_micro), 0))
            .where(CreditReservation.owner_type == owner_type)
            .where(CreditReservation.owner_id == owner_id)
            .where(CreditReservation.status == "open")
            .where(CreditReservation.expires_at < now)
        )
        return int(total or 0)

    def count_open_reservations(self) -> int:
        return int(
            self.db.scalar(
                select(func.count())
                .select_from(CreditReservation)
                .where(CreditReservation.status == "open")
            )
            or 0
        )


@dataclass(frozen=True)
class LedgerFilter:
    """Which entries of one account a report reads (every bound optional, `until` exclusive)."""

    account_id: str
    owner_type: str | None = None
    owner_id: str | None = None
    kind: str | None = None
    route: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, query: Any) -> Any:  # a Select of any columns
        query = query.where(LedgerEntry.account_id == self.account_id)
        for column, value in (
            (LedgerEntry.owner_type, self.owner_type),
            (LedgerEntry.owner_id, self.owner_id),
            (LedgerEntry.kind, self.kind),
            (LedgerEntry.route, self.route),
            (LedgerEntry.model, self.model),
        ):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(LedgerEntry.created_at >= self.since)
        if self.until is not None:
            query = query.where(LedgerEntry.created_at < self.until)
        return query


class ReportStore(Store):
    """Reads over an account's ledger for usage reports and the ledger listing."""

    def entries(self, where: LedgerFilter, params: PageParams) -> tuple[list[LedgerEntry], bool]:
        """One page of entries, and whether more lie beyond it."""
        return page(self.db, where.where(select(LedgerEntry)), LedgerEntry.id, params)

    def all_entries(self, where: LedgerFilter, cap: int) -> Iterator[LedgerEntry]:
        query = where.where(select(LedgerEntry)).order_by(LedgerEntry.id.desc()).limit(cap)
        yield from self.db.scalars(query.execution_options(yield_per=1000))

    def charges(
        self, where: LedgerFilter
    ) -> Iterator[tuple[datetime, str | None, str | None, int]]:
        """(when, route, model, micro-credits spent) of every charge in the window."""
        query = where.where(
            select(
                LedgerEntry.created_at,
                LedgerEntry.route,
                LedgerEntry.model,
                LedgerEntry.amount_micro,
            )
        ).where(LedgerEntry.kind == "charge")
        for when, route, model, micro in self.db.execute(query.execution_options(yield_per=1000)):
            yield when, route, model, -int(micro)
