"""100 concurrent completions by one external user, with a balance for half of them, through
4 server processes on the real local model: no overspend, and the ledger sums match."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.live import LiveServer
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

REQUESTS = 100
USER = {"provider": "app", "unique_key": "racer"}
# Deterministic turns: the same input on fresh sessions, greedy decoding, a fixed output length.
TURN = {"input": "Count from one to twenty.", "max_output_tokens": 4, "temperature": 0}


def micro(header: str) -> int:
    return int(Decimal(header) * 1_000_000)


def test_100_concurrent_completions_against_half_a_balance(
    settings_env: dict[str, str], db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    server = LiveServer(settings_env, workers=4)
    try:
        v1 = f"{server.base_url}/v1"
        with httpx.Client(base_url=v1, headers=tenant.headers, timeout=120) as platform:
            made = platform.post("/external_users/session", json={"external_user": USER})
            user_id = made.json()["external_user"]["id"]
            user = {"Authorization": f"Bearer {made.json()['external_api_key']}"}
            granted = platform.post(
                "/external_users/credits/grant",
                json={"external_user": USER, "input": {"credits": 1}},
            )
            assert granted.status_code == 200, granted.text
        with httpx.Client(base_url=v1, headers=user, timeout=120) as client:
            sessions = [
                client.post("/external_users/utils/assistant_session").json()["session_id"]
                for _ in range(REQUESTS + 1)
            ]
            probe = client.post(
                "/external_users/assistant/completion",
                json={"session_id": sessions.pop(), **TURN},
            )
            assert probe.status_code == 200, probe.text
            cost = micro(probe.headers["x-credits-charged"])
            left = micro(probe.headers["x-credits-remaining"])
            target = cost * REQUESTS // 2
            # Burn the surplus exactly, so the balance covers half of the turns.
            burn = client.post(
                "/external_users/utils/usage_charge",
                json={"cost_usd": str(Decimal(left - target) / 100_000_000)},
            )
            assert burn.status_code == 200, burn.text
            assert micro(burn.headers["x-credits-remaining"]) == target

        async def fire() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=REQUESTS)
            async with httpx.AsyncClient(
                base_url=v1, headers=user, timeout=300, limits=limits
            ) as racers:
                return await asyncio.gather(
                    *(
                        racers.post(
                            "/external_users/assistant/completion",
                            json={"session_id": session_id, **TURN},
                        )
                        for session_id in sessions
                    )
                )

        responses = asyncio.run(fire())
    finally:
        server.stop()

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, [
        r.text for r in responses if r.status_code not in (200, 402)
    ]
    charged = [micro(r.headers["x-credits-charged"]) for r in responses if r.status_code == 200]
    assert statuses.count(200) == REQUESTS // 2  # every turn costs exactly `cost`
    assert all(c == cost for c in charged)
    owner = Owner.external_user(user_id, tenant.account_id)
    with db.session(write=False) as session:
        ledger = Ledger(session)
        assert ledger.balance(owner) == ledger.ledger_sum(owner) == target - sum(charged) == 0
        assert ledger.store.count_open_reservations() == 0
        entries = ledger.store.entries(owner.type, owner.id, limit=10_000)
        account = Owner.account(tenant.account_id)
        assert ledger.balance(account) == ledger.ledger_sum(account) == 99_000_000
    assert min(e.balance_after_micro for e in entries) >= 0
    assert sum(1 for e in entries if e.kind == "charge") == 1 + 1 + REQUESTS // 2
