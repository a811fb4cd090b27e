"""The console's sign-in and session rules, and the public routes it reads (usage, ledger, keys,
external users, ChatKit sessions), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import text

from sessionary.console.service import COOKIE, ConsoleService, csrf_token
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.test_credits_http import grant

ORIGIN = "http://testserver"


def sign_in(client: TestClient, key: str) -> str:
    answer = client.post(
        "/console/sign-in",
        data={"api_key": key},
        headers={"origin": ORIGIN},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    token = answer.cookies[COOKIE]
    client.cookies.clear()
    return str(token)


def spend(client: TestClient, tenant: Tenant, times: int = 2) -> None:
    for _ in range(times):
        answer = client.post("/v1/embeddings", json={"input": "some words"}, headers=tenant.headers)
        assert answer.status_code == 200, answer.text


def test_cookie_session_reads_and_needs_csrf_to_change(client: TestClient, tenant: Tenant) -> None:
    token = sign_in(client, tenant.api_key)
    cookies = {COOKIE: token}
    me = client.get("/v1/me", cookies=cookies)
    assert me.status_code == 200 and me.json()["account_id"] == tenant.account_id
    refused = client.post("/v1/keys", json={"name": "x"}, cookies=cookies)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/v1/keys", json={}, cookies=cookies, headers={"x-csrf-token": "0" * 64})
    assert wrong.status_code == 403
    made = client.post(
        "/v1/keys", json={"name": "x"}, cookies=cookies, headers={"x-csrf-token": csrf_token(token)}
    )
    assert made.status_code == 200 and made.json()["key"].startswith("sk_sy_")


def test_session_dies_with_its_key_and_at_sign_out(client: TestClient, tenant: Tenant) -> None:
    token = sign_in(client, tenant.api_key)
    other = client.post("/v1/keys", json={}, headers=tenant.headers).json()
    second = sign_in(client, other["key"])
    assert client.get("/v1/me", cookies={COOKIE: second}).status_code == 200
    assert client.delete(f"/v1/keys/{other['id']}", headers=tenant.headers).status_code == 200
    assert client.get("/v1/me", cookies={COOKIE: second}).status_code == 401
    page = client.get("/console", cookies={COOKIE: second}, follow_redirects=False)
    assert page.headers["location"] == "/console/sign-in"
    out = client.post(
        "/console/sign-out",
        data={"csrf_token": csrf_token(token)},
        cookies={COOKIE: token},
        headers={"origin": ORIGIN},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert client.get("/v1/me", cookies={COOKIE: token}).status_code == 401


def test_sign_in_refuses_other_origins_and_rate_limits(client: TestClient, tenant: Tenant) -> None:
    foreign = client.post(
        "/console/sign-in",
        data={"api_key": tenant.api_key},
        headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403
    for _ in range(10):
        bad = client.post(
            "/console/sign-in", data={"api_key": "sk_sy_nope"}, headers={"origin": ORIGIN}
        )
        assert bad.status_code == 401
    limited = client.post(
        "/console/sign-in", data={"api_key": tenant.api_key}, headers={"origin": ORIGIN}
    )
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_a_link_used_while_another_writer_is_busy_waits_its_turn(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    """The link is a GET that writes: its unit of work must be a writer from the start (a read
    that upgrades was refused at once on SQLite, a 503, while the HoldKeeper was writing)."""
    with db.session() as session:
        issued = ConsoleService(session).issue_link(tenant.account_id, operator=False)
    holding, done = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as session:
            session.execute(text("UPDATE accounts SET name = name WHERE id = :id"), {"id": "x"})
            holding.set()
            time.sleep(0.5)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        opened = client.get(f"/console/link/{issued.token}", follow_redirects=False)
    finally:
        thread.join()
    assert done.is_set()
    assert opened.status_code == 303 and COOKIE in opened.cookies


def test_link_works_once(client: TestClient, db: Database, tenant: Tenant) -> None:
    with db.session() as session:
        issued = ConsoleService(session).issue_link(tenant.account_id, operator=False)
    first = client.get(f"/console/link/{issued.token}", follow_redirects=False)
    assert first.status_code == 303 and COOKIE in first.cookies
    client.cookies.clear()
    again = client.get(f"/console/link/{issued.token}", follow_redirects=False)
    assert again.status_code == 401
    headers = again.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_usage_equals_the_ledger_sum(client: TestClient, db: Database, tenant: Tenant) -> None:
    grant(db, tenant, 50_000_000)
    spend(client, tenant, 3)
    usage = client.get("/v1/usage", params={"group_by": "route"}, headers=tenant.headers).json()
    assert usage["total"]["requests"] == 3
    (row,) = usage["data"]
    assert row["key"] == "/v1/embeddings" and row["requests"] == 3
    ledger = client.get("/v1/credits/ledger", params={"kind": "charge"}, headers=tenant.headers)
    charged = sum(-Decimal(str(e["credits"])) for e in ledger.json()["data"])
    assert Decimal(usage["total"]["credits_exact"]) == charged > 0
    days = client.get("/v1/usage", params={"group_by": "day"}, headers=tenant.headers).json()
    assert len(days["data"]) >= 30 and sum(d["requests"] for d in days["data"]) == 3
    models = client.get("/v1/usage", params={"group_by": "model"}, headers=tenant.headers).json()
    assert sum(m["requests"] for m in models["data"]) == 3


def test_ledger_pages_filters_and_csv(client: TestClient, db: Database, tenant: Tenant) -> None:
    grant(db, tenant, 50_000_000)
    spend(client, tenant, 3)
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/credits/ledger", params=params, headers=tenant.headers).json()
        seen += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    assert len(seen) == len({e["id"] for e in seen}) >= 4
    grants = client.get("/v1/credits/ledger", params={"kind": "grant"}, headers=tenant.headers)
    assert [e["kind"] for e in grants.json()["data"]] == ["grant"]
    csv = client.get("/v1/credits/ledger", params={"format": "csv"}, headers=tenant.headers)
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.strip().splitlines()) == len(seen) + 1
    future = client.get("/v1/credits/ledger", params={"from": "2999-01-01"}, headers=tenant.headers)
    assert future.json()["data"] == []


def test_reports_refuse_bad_parameters_and_other_accounts(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    for params in (
        {"from": "yesterday"},
        {"from": "2025-02-01", "to": "2025-01-01"},
        {"from": "2020-01-01", "to": "2025-01-01"},
        {"owner": "someone"},
        {"group_by": "hour"},
    ):
        answer = client.get("/v1/usage", params=params, headers=tenant.headers)
        assert answer.status_code in (400, 422), params
        assert set(answer.json()) == {"error"}
    other = make_tenant(db, "other")
    grant(db, other, 50_000_000)
    spend(client, other, 1)
    mine = client.get("/v1/credits/ledger", headers=tenant.headers).json()["data"]
    assert all(e["owner_id"] != other.account_id for e in mine)
    key_of_other = client.get("/v1/keys", headers=other.headers).json()["data"][0]["id"]
    assert client.delete(f"/v1/keys/{key_of_other}", headers=tenant.headers).status_code == 403


def test_external_users_and_chatkit_sessions_are_listed(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 50_000_000)
    for name in ("a", "b"):
        made = client.post(
            "/v1/external_users/session",
            json={"external_user": {"provider": "app", "unique_key": name}},
            headers=tenant.headers,
        )
        assert made.status_code == 200
    client.post(
        "/v1/external_users/credits/grant",
        json={"external_user": {"provider": "app", "unique_key": "b"}, "input": {"credits": 7}},
        headers=tenant.headers,
    )
    users = client.get("/v1/external_users", params={"order": "asc"}, headers=tenant.headers)
    rows = users.json()["data"]
    assert [(u["unique_key"], u["generation_credits"]) for u in rows] == [("a", 0), ("b", 7)]
    made = client.post(
        "/v1/chatkit/sessions",
        json={"user": "u", "workflow": {"id": "default"}},
        headers=tenant.headers,
    ).json()
    listed = client.get("/v1/chatkit/sessions", headers=tenant.headers).json()["data"]
    assert [s["id"] for s in listed] == [made["id"]] and "…" in listed[0]["client_secret"]


def test_an_auth_token_may_not_mint_keys(client: TestClient, tenant: Tenant) -> None:
    login = client.post("/v1/create_login_token", json={}, headers=tenant.headers).json()
    auth = client.get("/users/verify_token", params={"loginToken": login["loginToken"]}).json()
    headers = {"Authorization": f"Bearer {auth['authToken']}"}
    refused = client.post("/v1/keys", json={}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "token_cannot_mint_keys"
