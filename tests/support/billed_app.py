"""The real application plus one billed probe route, for ledger and idempotency tests.

`uvicorn tests.support.billed_app:create_app --factory --workers 4` serves it like the real
server (same middleware, ledger and storage); the probe spends credits through `Meter`, exactly
as the product's billed routes do, with the cost, a delay and a failure chosen by the test.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, Field

from sessionary.accounts.principal import Caller
from sessionary.app import create_app as create_real_app
from sessionary.billing.headers import credit_headers
from sessionary.billing.ledger import Owner
from sessionary.billing.metering import Meter
from sessionary.config import Settings
from sessionary.kit.dependencies import AppDatabase
from sessionary.kit.errors import UpstreamError
from sessionary.kit.ids import new_id

PROBE_ROUTE = "/v1/test/charge"


class ChargeRequest(BaseModel):
    cost_micro: int = Field(ge=0)
    reserve_micro: int | None = Field(default=None, ge=0)
    sleep_seconds: float = Field(default=0, ge=0, le=30)
    fail: bool = False
    note: str | None = None


def probe_router() -> APIRouter:
    router = APIRouter()

    @router.post("/test/charge")
    async def charge(
        body: ChargeRequest, caller: Caller, db: AppDatabase, response: Response
    ) -> dict:  # type: ignore[type-arg]
        owner = Owner.account(caller.account_id)
        worst_case = body.reserve_micro if body.reserve_micro is not None else body.cost_micro
        async with Meter.held(db, owner, worst_case, route=PROBE_ROUTE) as meter:
            if body.sleep_seconds:
                await anyio.sleep(body.sleep_seconds)
            if body.fail:
                raise UpstreamError("The model provider failed (simulated).")
            settlement = await meter.settle(body.cost_micro, model="probe", usage={"units": 1})
        response.headers.update(credit_headers(settlement))
        return {"answer": new_id("ans"), "charged_micro": settlement.charged_micro}

    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_real_app(settings)
    app.include_router(probe_router(), prefix="/v1")
    return app
