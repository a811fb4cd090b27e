"""Credits over HTTP: balance, credit headers, 402, and failures that charge nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.billed_app import PROBE_ROUTE, create_app
from tests.test_auth import assert_error


@pytest.fixture
def billed(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def grant(db: Database, tenant: Tenant, micro: int) -> None:
    with db.session() as session:
        Ledger(session).grant(Owner.account(tenant.account_id), micro, note="test top-up")


def ledger_state(db: Database, tenant: Tenant) -> tuple[int, int, int]:
    with db.session(write=False) as session:
        ledger = Ledger(session)
        owner = Owner.account(tenant.account_id)
        return (
            ledger.balance(owner),
            ledger.ledger_sum(owner),
            ledger.store.count_open_reservations(),
        )


def test_credits_balance_and_last_top_up(billed: TestClient, db: Database, tenant: Tenant) -> None:
    assert billed.get("/v1/credits", headers=tenant.headers).json() == {
        "remainingCredits": 0.0,
        "lastTopUp": None,
    }
    grant(db, tenant, 12_500_000)
    body = billed.get("/v1/credits", headers=tenant.headers).json()
    assert body["remainingCredits"] == 12.5
    assert body["lastTopUp"]["creditsApplied"] == 12.5
    assert body["lastTopUp"]["billingReason"] == "test top-up"
    assert_error(billed.get("/v1/credits"), 401)


def test_billed_answer_carries_credit_headers(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    response = billed.post(PROBE_ROUTE, json={"cost_micro": 2_500_000}, headers=tenant.headers)
    assert response.status_code == 200
    assert response.headers["x-credits-charged"] == "2.5"
    assert response.headers["x-credits-remaining"] == "7.5"
    assert ledger_state(db, tenant) == (7_500_000, 7_500_000, 0)


def test_insufficient_credits_is_402_with_remaining(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 1_000_000)
    response = billed.post(PROBE_ROUTE, json={"cost_micro": 2_000_000}, headers=tenant.headers)
    error = assert_error(response, 402, "insufficient_credits")
    assert "2 credits" in error["message"]
    assert response.headers["x-credits-remaining"] == "1"
    assert ledger_state(db, tenant) == (1_000_000, 1_000_000, 0)


def test_failed_request_is_not_charged(billed: TestClient, db: Database, tenant: Tenant) -> None:
    grant(db, tenant, 5_000_000)
    response = billed.post(
        PROBE_ROUTE, json={"cost_micro": 1_000_000, "fail": True}, headers=tenant.headers
    )
    assert_error(response, 502)
    assert ledger_state(db, tenant) == (5_000_000, 5_000_000, 0)
    # Reserved then released: both entries are in the ledger, and they cancel out.
    with db.session(write=False) as session:
        kinds = [e.kind for e in Ledger(session).store.entries("account", tenant.account_id)]
    assert kinds == ["release", "reservation", "grant"]


def test_metrics_count_committed_credits_only(
    billed: TestClient, db: Database, tenant: Tenant
) -> None:
    def charged() -> float:
        for line in billed.get("/metrics").text.splitlines():
            if (
                line.startswith("sessionary_credits_total{")
                and 'kind="charge"' in line
                and PROBE_ROUTE in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    grant(db, tenant, 10_000_000)
    before = charged()
    assert (
        billed.post(PROBE_ROUTE, json={"cost_micro": 1_500_000}, headers=tenant.headers).status_code
        == 200
    )
    assert charged() == pytest.approx(before + 1.5)
    # A failed request reserved and released, and charged nothing: the counter does not move.
    assert (
        billed.post(
            PROBE_ROUTE, json={"cost_micro": 1_000_000, "fail": True}, headers=tenant.headers
        ).status_code
        == 502
    )
    assert charged() == pytest.approx(before + 1.5)
    assert (
        'sessionary_credits_total{kind="grant",owner_type="account",route=""}'
        in billed.get("/metrics").text
    )
