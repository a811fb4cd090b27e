"""HTTP routes of the billing domain: the balance, usage reports and the ledger."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from sessionary.accounts.principal import Caller, UserCaller
from sessionary.billing.ledger import Owner
from sessionary.billing.reports import (
    GroupBy,
    ReportService,
    bounds,
    entry_object,
    window,
)
from sessionary.billing.schemas import CreditsBalance
from sessionary.billing.service import CreditsService
from sessionary.kit.dependencies import DbSession
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["credits"])

EntryKindParam = Literal["grant", "charge", "refund", "reservation", "release"]
# Filters shared by the usage report and the ledger (bounded: they are matched, not searched).
OwnerParam = Annotated[
    str | None, Query(max_length=40, description="'account' or an external user id (eu_...).")
]
RouteParam = Annotated[str | None, Query(max_length=200, description="Only this route.")]
ModelParam = Annotated[str | None, Query(max_length=200, description="Only this model.")]
FromParam = Annotated[
    str | None,
    Query(alias="from", max_length=40, description="Start (YYYY-MM-DD or ISO 8601)."),
]
ToParam = Annotated[
    str | None,
    Query(alias="to", max_length=40, description="End, inclusive for a date (YYYY-MM-DD)."),
]


@router.get("/credits", response_model=CreditsBalance, summary="The caller's remaining credits")
def get_credits(caller: UserCaller, db: DbSession) -> CreditsBalance:
    return CreditsService(db).balance(Owner.of(caller))


@router.get("/usage", summary="Requests and credits spent by day, model or route")
def get_usage(
    caller: Caller,
    db: DbSession,
    group_by: GroupBy = "day",
    owner: OwnerParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    since: FromParam = None,
    until: ToParam = None,
) -> dict[str, Any]:
    return ReportService(db).usage(
        caller, group_by, window(since, until), owner=owner, route=route, model=model
    )


@router.get(
    "/credits/ledger",
    summary="The account's ledger entries (cursor-paginated, or CSV)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def get_ledger(
    caller: Caller,
    db: DbSession,
    page: Page,
    owner: OwnerParam = None,
    kind: EntryKindParam | None = None,
    route: RouteParam = None,
    model: ModelParam = None,
    since: FromParam = None,
    until: ToParam = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    span = bounds(since, until)
    reports = ReportService(db)
    if format == "csv":
        body = reports.ledger_csv(
            caller, owner=owner, kind=kind, route=route, model=model, span=span
        )
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="ledger.csv"'},
        )
    rows, has_more = reports.ledger(
        caller, page, owner=owner, kind=kind, route=route, model=model, span=span
    )
    return envelope([entry_object(r) for r in rows], has_more)
