"""The model provider failing, slow, or dropping the connection mid-stream, through the real
routes: a mapped 502 / 504 or a `response.failed` event, the reservation released, nothing
charged for nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from sessionary.providers.settings import ProviderSettings
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.test_credits_http import grant


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.stop()


@pytest.fixture
def remote_app(
    settings: Settings, upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[TestClient, Database, Tenant]]:
    llm = ProviderSettings(
        provider="openai",
        model="gpt-4o-mini",
        base_url=upstream.base_url,
        api="chat",
        max_retries=0,
        timeout_seconds=1,
    )
    configured = settings.model_copy(update={"llm": llm})
    db = Database(configured)
    upgrade(db)
    tenant = make_tenant(db, "faults")
    grant(db, tenant, 10_000_000)
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        yield client, db, tenant
    db.dispose()


def state(db: Database, tenant: Tenant) -> tuple[int, int, int]:
    with db.session(write=False) as session:
        ledger = Ledger(session)
        owner = Owner.account(tenant.account_id)
        return (
            ledger.balance(owner),
            ledger.ledger_sum(owner),
            ledger.store.count_open_reservations(),
        )


def turn(client: TestClient, tenant: Tenant, **extra: object) -> object:
    session = client.post("/v1/assistant/session", json={}, headers=tenant.headers)
    body = {"session_id": session.json()["session_id"], "input": "Hello?", **extra}
    return client.post("/v1/assistant/completion", json=body, headers=tenant.headers)


def test_failing_and_slow_upstreams_map_to_502_and_504_and_charge_nothing(
    remote_app: tuple[TestClient, Database, Tenant], upstream: FakeUpstream
) -> None:
    client, db, tenant = remote_app
    failed = turn(client, tenant)
    assert failed.status_code == 502  # type: ignore[attr-defined]
    assert "openai" in failed.json()["error"]["message"]  # type: ignore[attr-defined]
    upstream.delay_seconds = 3
    slow = turn(client, tenant)
    upstream.delay_seconds = 0
    assert slow.status_code == 504  # type: ignore[attr-defined]
    assert state(db, tenant) == (10_000_000, 10_000_000, 0)


def test_a_stream_cut_mid_way_ends_in_response_failed_and_charges_what_came(
    remote_app: tuple[TestClient, Database, Tenant], upstream: FakeUpstream
) -> None:
    client, db, tenant = remote_app
    upstream.chat_mode = "drop"
    answer = turn(client, tenant, stream=True)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    events = [
        json.loads(line[len("data: ") :])
        for line in answer.text.splitlines()  # type: ignore[attr-defined]
        if line.startswith("data: ")
    ]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert events[-1]["response"]["error"]["code"]
    balance, ledger_sum, open_holds = state(db, tenant)
    assert balance == ledger_sum and open_holds == 0
    # The model was called and two chunks reached the client: the prompt and those are paid for,
    # as the failed event says, and never more than the hold.
    charged = round(events[-1]["response"]["credits"]["charged"] * 1_000_000)
    assert 0 < charged == 10_000_000 - balance < 5_000
