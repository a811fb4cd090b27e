"""Authentication on both engines: keys work, and every kind of bad key is a 401 envelope."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sessionary.accounts.keys import generate_key
from sessionary.accounts.service import AccountService
from sessionary.app import create_app
from sessionary.billing.service import CreditsService
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from tests.conftest import Tenant, make_tenant, served


def assert_error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    assert response.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


def test_valid_key_identifies_its_account(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/v1/me", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["account_id"] == tenant.account_id
    assert response.json()["api_key_id"] == tenant.key_id


def test_api_v1_alias_serves_the_same_routes(client: TestClient, tenant: Tenant) -> None:
    assert client.get("/api/v1/me", headers=tenant.headers).json() == (
        client.get("/v1/me", headers=tenant.headers).json()
    )


def test_two_accounts_see_themselves(client: TestClient, db: Database, tenant: Tenant) -> None:
    other = make_tenant(db, "tenant-b")
    assert client.get("/v1/me", headers=other.headers).json()["account_id"] == other.account_id
    assert other.account_id != tenant.account_id


def test_missing_key(client: TestClient) -> None:
    error = assert_error(client.get("/v1/me"), 401, "missing_api_key")
    assert error["type"] == "authentication_error"


def test_malformed_headers(client: TestClient, tenant: Tenant) -> None:
    for header in ["Basic abc", "Bearer", "Bearer ", tenant.api_key, "Bearer not-a-key"]:
        assert_error(client.get("/v1/me", headers={"Authorization": header}), 401)


def test_unknown_key_and_wrong_secret(client: TestClient, tenant: Tenant) -> None:
    assert_error(
        client.get("/v1/me", headers={"Authorization": f"Bearer {generate_key().plaintext}"}), 401
    )
    # Right prefix, wrong secret: found by prefix, refused by the hash.
    forged = tenant.api_key[:-4] + ("AAAA" if not tenant.api_key.endswith("AAAA") else "BBBB")
    assert_error(client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"}), 401)


def test_revoked_key_stops_working(client: TestClient, db: Database, tenant: Tenant) -> None:
    assert client.get("/v1/me", headers=tenant.headers).status_code == 200
    with served(client).session() as session:  # another process's would come by a notice
        AccountService(session).revoke_key(tenant.key_id)
    assert_error(client.get("/v1/me", headers=tenant.headers), 401, "revoked_api_key")


def test_last_used_at_is_recorded(client: TestClient, db: Database, tenant: Tenant) -> None:
    with db.session() as session:
        assert AccountService(session).store.get_key(tenant.key_id).last_used_at is None  # type: ignore[union-attr]
    client.get("/v1/me", headers=tenant.headers)
    with db.session() as session:
        assert AccountService(session).store.get_key(tenant.key_id).last_used_at is not None  # type: ignore[union-attr]


def test_a_key_is_resolved_while_another_writer_holds_the_database(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    """A key lookup is a read, which never waits for a writer (SQLite's WAL): a writer holding
    the lock neither delays it nor makes it fail, and the revocation it commits is seen by the
    next request."""
    client.get("/v1/me", headers=tenant.headers)  # last_used_at written: the next is a read
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        # Revoked by the serving process, which drops what it keeps of the account at its own
        # commit; made through another Database, the news came by a notice milliseconds later,
        # and the next request sometimes came first (`kit/notified.py`).
        with served(client).session() as session:
            AccountService(session).revoke_key(tenant.key_id)
            session.flush()  # the UPDATE is sent: the writer holds the database
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        began = time.monotonic()
        answer = client.get("/v1/me", headers=tenant.headers)
        waited = time.monotonic() - began
    finally:
        release.set()
        thread.join()
    assert answer.status_code == 200, answer.text  # the revocation is not committed yet
    assert waited < 5  # blocked, it would wait out the writer (10 s)
    assert_error(client.get("/v1/me", headers=tenant.headers), 401, "revoked_api_key")


def test_an_exhausted_connection_pool_never_stalls_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop never waits for a pooled connection: with every one held by a slow
    request, another caller's key is read on the loop's own connection (SQLite) or waits for a
    pooled one on a worker, and the loop keeps serving (the holder needs it to commit and give
    its connection back; a lookup waiting on the loop deadlocked them until the pool's 30 s
    timeout)."""
    settings = Settings(
        data_dir=tmp_path, log_level="WARNING", preload_models=False, db_pool_size=1,
        db_max_overflow=0,
    )  # fmt: skip
    database = Database(settings)
    upgrade(database)
    tenant = make_tenant(database)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    app = create_app(settings)
    balance = CreditsService.balance

    def slow(self: CreditsService, owner: Any) -> Any:
        found = balance(self, owner)
        time.sleep(1.5)  # a slow query, its session (the pool's one connection) open
        return found

    monkeypatch.setattr(CreditsService, "balance", slow)

    async def main() -> tuple[int, int, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            await c.get("/v1/me", headers=headers)  # last_used_at written: later lookups read
            gaps: list[float] = []
            running = True

            async def ticker() -> None:
                last = time.monotonic()
                while running:
                    await asyncio.sleep(0.05)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            ticking = asyncio.create_task(ticker())
            slow_one = asyncio.create_task(c.get("/v1/credits", headers=headers))
            await asyncio.sleep(0.5)  # the pool's one connection is now held
            other = await c.get("/v1/me", headers=headers)
            held = await slow_one
            running = False
            await ticking
            return held.status_code, other.status_code, max(gaps)

    held, other, stall = asyncio.run(main())
    database.dispose()
    assert (held, other) == (200, 200)
    assert stall < 1.0  # blocked, the loop would stall for the pool's timeout
