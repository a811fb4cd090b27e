"""Usage reports and the ledger listing of one account, for operators and the console.

A report reads the ledger itself, never a counter kept beside it, so the usage figures and the
ledger's own sum cannot drift apart: spend is the sum of the account's charge entries.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.billing.models import LedgerEntry
from sessionary.billing.money import credits_number, format_credits
from sessionary.billing.store import LedgerFilter, ReportStore
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

GroupBy = Literal["day", "model", "route"]
DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=366)
CSV_CAP = 100_000
CSV_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "owner_type",
    "owner_id",
    "credits",
    "balance_after",
    "route",
    "model",
    "request_id",
    "note",
)


def parse_bound(value: str | None, param: str, *, end: bool = False) -> datetime | None:
    """A date (`2025-01-31`, the whole day) or an ISO datetime (UTC when no zone), or 400."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{param}' is a date (YYYY-MM-DD) or an ISO 8601 datetime.", param=param
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


def window(since: str | None, until: str | None) -> Window:
    """The report's [from, to) window: the last 30 days by default, at most 366 days long."""
    end = parse_bound(until, "to", end=True) or utcnow()
    start = parse_bound(since, "from") or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidRequest("'from' must be before 'to'.", param="from")
    if end - start > MAX_WINDOW:
        raise InvalidRequest("A report covers at most 366 days.", param="from")
    return Window(start, end)


def bounds(since: str | None, until: str | None) -> Window | None:
    """An unlimited [from, to) filter for listings (None when neither bound is given)."""
    if not (since or until):
        return None
    start = parse_bound(since, "from") or datetime(1970, 1, 1, tzinfo=UTC)
    end = parse_bound(until, "to", end=True) or datetime(9999, 1, 1, tzinfo=UTC)
    if start >= end:
        raise InvalidRequest("'from' must be before 'to'.", param="from")
    return Window(start, end)


def owner_filter(caller: Principal, owner: str | None) -> tuple[str | None, str | None]:
    """(owner_type, owner_id) of the `owner` parameter: `account`, an external user id, or all."""
    if owner is None or owner == "":
        return None, None
    if owner == "account":
        return "account", caller.account_id
    if owner.startswith("eu_") and len(owner) <= 40:
        return "external_user", owner
    raise InvalidRequest("'owner' is 'account' or an external user id (eu_...).", param="owner")


def entry_object(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "credit.ledger_entry",
        "kind": entry.kind,
        "owner_type": entry.owner_type,
        "owner_id": entry.owner_id,
        "credits": credits_number(entry.amount_micro),
        "balance_after": credits_number(entry.balance_after_micro),
        "route": entry.route,
        "model": entry.model,
        "request_id": entry.request_id,
        "reservation_id": entry.reservation_id,
        "note": entry.note,
        "created_at": entry.created_at.isoformat(),
    }


class ReportService:
    def __init__(self, db: Session) -> None:
        self.store = ReportStore(db)

    def _filter(
        self,
        caller: Principal,
        *,
        owner: str | None,
        kind: str | None = None,
        route: str | None = None,
        model: str | None = None,
        span: Window | None = None,
    ) -> LedgerFilter:
        owner_type, owner_id = owner_filter(caller, owner)
        return LedgerFilter(
            account_id=caller.account_id,
            owner_type=owner_type,
            owner_id=owner_id,
            kind=kind or None,
            route=route or None,
            model=model or None,
            since=span.since if span else None,
            until=span.until if span else None,
        )

    def usage(
        self,
        caller: Principal,
        group_by: GroupBy,
        span: Window,
        *,
        owner: str | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Requests charged and credits spent per day (every day of the window), model or route."""
        where = self._filter(caller, owner=owner, route=route, model=model, span=span)
        buckets: dict[str, list[int]] = {}
        if group_by == "day":
            day = span.since.date()
            while datetime.combine(day, time(), tzinfo=UTC) < span.until:
                buckets[day.isoformat()] = [0, 0]
                day += timedelta(days=1)
        total = [0, 0]
        for when, entry_route, entry_model, micro in self.store.charges(where):
            key = {"day": when.date().isoformat(), "model": entry_model, "route": entry_route}[
                group_by
            ]
            bucket = buckets.setdefault(key or "(none)", [0, 0])
            bucket[0] += 1
            bucket[1] += micro
            total[0] += 1
            total[1] += micro
        rows = sorted(buckets.items()) if group_by == "day" else buckets.items()
        if group_by != "day":
            rows = sorted(rows, key=lambda item: (-item[1][1], item[0]))
        return {
            "object": "usage",
            "group_by": group_by,
            "from": span.since.isoformat(),
            "to": span.until.isoformat(),
            "data": [
                {"key": key, "requests": count, "credits": credits_number(micro)}
                for key, (count, micro) in rows
            ],
            "total": {
                "requests": total[0],
                "credits": credits_number(total[1]),
                "credits_exact": format_credits(total[1]),
            },
        }

    def ledger(
        self,
        caller: Principal,
        params: PageParams,
        *,
        owner: str | None = None,
        kind: str | None = None,
        route: str | None = None,
        model: str | None = None,
        span: Window | None = None,
    ) -> tuple[list[LedgerEntry], bool]:
        where = self._filter(caller, owner=owner, kind=kind, route=route, model=model, span=span)
        return self.store.entries(where, params)

    def ledger_csv(
        self,
        caller: Principal,
        *,
        owner: str | None = None,
        kind: str | None = None,
        route: str | None = None,
        model: str | None = None,
        span: Window | None = None,
    ) -> str:
        """The matching entries (newest first, at most 100,000) as one CSV document (read
        whole inside the request's transaction: a streamed body would outlive it)."""
        where = self._filter(caller, owner=owner, kind=kind, route=route, model=model, span=span)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for entry in self.store.all_entries(where, CSV_CAP):
            row = entry_object(entry)
            row["credits"] = format_credits(entry.amount_micro)
            row["balance_after"] = format_credits(entry.balance_after_micro)
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        return buffer.getvalue()
