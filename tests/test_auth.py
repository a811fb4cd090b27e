"""Authentication on both engines: keys work, and every kind of bad key is a 401 envelope."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient
from sqlalchemy import text

from sessionary.accounts.keys import generate_key
from sessionary.accounts.service import AccountService
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant


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
    with db.session() as session:
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
    """On SQLite a key is looked up on the event loop: a read, which never waits for a writer.
    A writer holding the lock neither delays the lookup nor makes it fail, and the
    revocation it commits is seen by the next request."""
    client.get("/v1/me", headers=tenant.headers)  # last_used_at written: the next is a read
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as session:
            session.execute(
                text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
                {"id": tenant.key_id},
            )
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
