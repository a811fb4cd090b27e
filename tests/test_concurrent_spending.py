"""Racing spenders across 4 server processes never overspend a balance, on either engine."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.billed_app import PROBE_ROUTE
from tests.support.live import LiveServer
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

COST = 1_000_000  # 1 credit a request
BALANCE = 77 * COST + 400_000  # covers 77 of them, with change left over
REQUESTS = 200


def test_200_concurrent_charges_against_a_partial_balance(
    settings_env: dict[str, str], db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, BALANCE)
    server = LiveServer(settings_env, workers=4, app_factory="tests.support.billed_app:create_app")
    try:

        async def fire() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=REQUESTS)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=120, limits=limits
            ) as client:
                return await asyncio.gather(
                    *(
                        client.post(PROBE_ROUTE, json={"cost_micro": COST}, headers=tenant.headers)
                        for _ in range(REQUESTS)
                    )
                )

        responses = asyncio.run(fire())
    finally:
        server.stop()

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == BALANCE // COST == 77
    assert statuses.count(402) == REQUESTS - 77
    for refused in (r for r in responses if r.status_code == 402):
        assert refused.json()["error"]["code"] == "insufficient_credits"
        assert float(refused.headers["x-credits-remaining"]) < COST / 1_000_000
    owner = Owner.account(tenant.account_id)
    with db.session(write=False) as session:
        ledger = Ledger(session)
        assert ledger.balance(owner) == ledger.ledger_sum(owner) == BALANCE - 77 * COST
        assert ledger.store.count_open_reservations() == 0
        entries = ledger.store.entries(owner.type, owner.id, limit=10_000)
    assert sum(1 for e in entries if e.kind == "charge") == 77
    assert min(e.balance_after_micro for e in entries) >= 0
