"""Idempotency-Key: retries replay the first answer and charge once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.support.billed_app import PROBE_ROUTE, create_app
from tests.support.live import LiveServer
from tests.test_auth import assert_error
from tests.test_credits_http import grant


@pytest.fixture
def billed(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def charges(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        entries = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
    return sum(1 for e in entries if e.kind == "charge")


def post(client: TestClient, tenant: Tenant, key: str, body: dict) -> httpx.Response:  # type: ignore[type-arg]
    return client.post(PROBE_ROUTE, json=body, headers={**tenant.headers, "Idempotency-Key": key})


def test_sequential_retries_replay_and_charge_once(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    first = post(billed, tenant, "order-1", {"cost_micro": 1_000_000})
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    for _ in range(50):
        again = post(billed, tenant, "order-1", {"cost_micro": 1_000_000})
        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["x-credits-charged"] == first.headers["x-credits-charged"] == "1"
        assert again.headers["x-credits-remaining"] == first.headers["x-credits-remaining"] == "99"
        assert again.headers["idempotent-replayed"] == "true"
    assert charges(db, tenant) == 1
    # The alias path is the same operation.
    alias = billed.post(
        "/api" + PROBE_ROUTE,
        json={"cost_micro": 1_000_000},
        headers={**tenant.headers, "Idempotency-Key": "order-1"},
    )
    assert alias.json() == first.json()
    # A new key is a new request.
    assert post(billed, tenant, "order-2", {"cost_micro": 1_000_000}).json() != first.json()
    assert charges(db, tenant) == 2


def test_same_key_with_another_body_is_422(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    assert post(billed, tenant, "k", {"cost_micro": 1}).status_code == 200
    assert_error(post(billed, tenant, "k", {"cost_micro": 2}), 422, "idempotency_key_reused")
    assert charges(db, tenant) == 1


def test_another_callers_key_never_replays(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    other = make_tenant(db, "tenant-b")
    grant(db, tenant, 10_000_000)
    grant(db, other, 10_000_000)
    mine = post(billed, tenant, "shared-key", {"cost_micro": 5})
    theirs = post(billed, other, "shared-key", {"cost_micro": 5})
    assert mine.status_code == theirs.status_code == 200
    assert mine.json() != theirs.json()
    assert "idempotent-replayed" not in theirs.headers
    assert charges(db, tenant) == charges(db, other) == 1


def test_failed_answers_are_not_stored(billed: TestClient, db: Database, tenant: Tenant) -> None:
    # Invalid request: not stored, so the corrected body may reuse the key.
    assert_error(post(billed, tenant, "k1", {"cost_micro": -1}), 400)
    # 402: not stored, so a retry after a top-up runs for real.
    assert_error(post(billed, tenant, "k1", {"cost_micro": 1_000}), 402)
    grant(db, tenant, 5_000)
    assert post(billed, tenant, "k1", {"cost_micro": 1_000}).status_code == 200
    # An upstream failure: not stored, not charged; the retry runs again.
    assert_error(post(billed, tenant, "k2", {"cost_micro": 1_000, "fail": True}), 502)
    assert_error(post(billed, tenant, "k2", {"cost_micro": 1_000, "fail": True}), 502)
    assert charges(db, tenant) == 1


def test_malformed_keys_and_unauthenticated_calls(billed: TestClient, tenant: Tenant) -> None:
    assert_error(post(billed, tenant, "x" * 256, {"cost_micro": 1}), 400, "invalid_idempotency_key")
    response = billed.post(PROBE_ROUTE, json={"cost_micro": 1}, headers={"Idempotency-Key": "k"})
    assert_error(response, 401)


def test_retry_while_the_first_is_running_is_409(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    impatient = settings.model_copy(update={"idempotency_wait_seconds": 0.0})
    with TestClient(create_app(impatient), raise_server_exceptions=False) as client:
        results: dict[str, httpx.Response] = {}

        def slow() -> None:
            results["slow"] = post(client, tenant, "busy", {"cost_micro": 7, "sleep_seconds": 1.5})

        worker = threading.Thread(target=slow)
        worker.start()
        time.sleep(0.5)
        response = post(client, tenant, "busy", {"cost_micro": 7, "sleep_seconds": 1.5})
        worker.join()
    assert_error(response, 409, "idempotency_in_progress")
    assert response.headers["retry-after"] == "1"
    assert results["slow"].status_code == 200
    assert charges(db, tenant) == 1


@pytest.mark.slow
def test_concurrent_retries_across_processes_charge_once(
    settings_env: dict[str, str], db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    server = LiveServer(settings_env, workers=4, app_factory="tests.support.billed_app:create_app")
    try:

        async def fire() -> list[httpx.Response]:
            headers = {**tenant.headers, "Idempotency-Key": "concurrent-1"}
            body = {"cost_micro": 3_000_000, "sleep_seconds": 0.3}
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                return await asyncio.gather(
                    *(client.post(PROBE_ROUTE, json=body, headers=headers) for _ in range(50))
                )

        responses = asyncio.run(fire())
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.text for r in responses}) == 1
    assert {r.headers["x-credits-charged"] for r in responses} == {"3"}
    assert charges(db, tenant) == 1
    with db.session(write=False) as session:
        assert Ledger(session).balance(Owner.account(tenant.account_id)) == 97_000_000
