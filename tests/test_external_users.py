"""External users in-process, on both engines: identity, keys, tokens, credits, usage, library."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from sessionary.accounts.models import ClientToken
from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from sessionary.kit.models import utcnow
from tests.conftest import Tenant, make_tenant
from tests.test_credits_http import grant
from tests.test_secrets import dump_database

ALICE = {"provider": "whop", "unique_key": "whop:alice", "external_user_id": "alice"}
BOB = {"provider": "whop", "externalUserId": "bob", "displayName": "Bob"}


def new_user(
    client: TestClient, tenant: Tenant, identity: dict[str, Any], credits: int = 0
) -> dict[str, Any]:
    made = client.post(
        "/v1/external_users/session", json={"external_user": identity}, headers=tenant.headers
    )
    assert made.status_code == 200, made.text
    body: dict[str, Any] = made.json()
    if credits:
        granted = client.post(
            "/v1/external_users/credits/grant",
            json={"external_user": identity, "input": {"credits": credits}},
            headers=tenant.headers,
        )
        assert granted.status_code == 200, granted.text
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_identity_is_unique_per_account_and_refresh_updates_the_profile(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    first = new_user(client, tenant, {**ALICE, "email": "a@example.com", "metadata": {"tier": 2}})
    again = new_user(client, tenant, {**ALICE, "username": "alice24"})
    assert first["created"] is True and again["created"] is False
    assert first["external_user"]["id"] == again["external_user"]["id"]
    summary = again["external_user"]
    assert (summary["email"], summary["username"], summary["metadata"]) == (
        "a@example.com",
        "alice24",
        {"tier": 2},
    )
    # unique_key defaults to external_user_id; camelCase aliases are the same fields.
    bob = new_user(client, tenant, BOB)
    assert (bob["external_user"]["unique_key"], bob["external_user"]["display_name"]) == (
        "bob",
        "Bob",
    )
    other_provider = new_user(client, tenant, {**BOB, "provider": "discord"})
    assert other_provider["external_user"]["id"] != bob["external_user"]["id"]
    # Another account's user of the same name is another user.
    other = make_tenant(db, "other")
    theirs = new_user(client, other, ALICE)
    assert theirs["external_user"]["id"] != first["external_user"]["id"]


@pytest.mark.parametrize(
    ("identity", "param"),
    [
        ({"unique_key": "x"}, "external_user.provider"),
        ({"provider": "whop"}, "external_user"),
        ({"provider": "", "unique_key": "x"}, "external_user.provider"),
        ({"provider": "whop", "unique_key": "x" * 300}, "external_user.unique_key"),
        ({"provider": "whop", "unique_key": "x", "metadata": {"k": "v" * 20_000}}, "external_user"),
        ("whop:alice", "external_user"),
    ],
)
def test_bad_identities_are_400(
    client: TestClient, tenant: Tenant, identity: Any, param: str
) -> None:
    response = client.post(
        "/v1/external_users/session", json={"external_user": identity}, headers=tenant.headers
    )
    assert error_of(response, 400)["param"].startswith(param)


def test_key_is_shown_once_and_rotation_revokes_the_old_one(
    client: TestClient, tenant: Tenant
) -> None:
    key = new_user(client, tenant, ALICE)["external_api_key"]
    assert key.startswith("sk_eu_")
    assert new_user(client, tenant, ALICE)["external_api_key"] is None
    me = client.get("/v1/me", headers=bearer(key)).json()
    assert me["external_user_id"].startswith("eu_")
    rotated = client.post(
        "/v1/external_users/session",
        json={"external_user": ALICE, "rotateApiKey": True},
        headers=tenant.headers,
    ).json()["external_api_key"]
    assert rotated != key
    assert error_of(client.get("/v1/me", headers=bearer(key)), 401)["code"] == "revoked_api_key"
    assert client.get("/v1/me", headers=bearer(rotated)).status_code == 200


def test_grants_move_credits_from_the_account(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 30_000_000)
    new_user(client, tenant, ALICE)
    moved = client.post(
        "/v1/external_users/credits/grant",
        json={"external_user": ALICE, "input": {"credits": 25}},
        headers=tenant.headers,
    )
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert (body["creditsGranted"], body["remainingCredits"], body["internalRemainingCredits"]) == (
        25,
        25,
        5,
    )
    short = client.post(
        "/v1/external_users/credits/grant",
        json={"external_user": ALICE, "input": {"credits": 6}},
        headers=tenant.headers,
    )
    assert error_of(short, 402)["code"] == "insufficient_credits"
    for credits in (0, -3, 1.5, "10", True):
        bad = client.post(
            "/v1/external_users/credits/grant",
            json={"external_user": ALICE, "input": {"credits": credits}},
            headers=tenant.headers,
        )
        assert error_of(bad, 400)["param"] == "input.credits"
    user_id = body["external_user"]["id"]
    with db.session(write=False) as session:
        ledger = Ledger(session)
        for owner in (Owner.account(tenant.account_id), Owner.external_user(user_id, "")):
            assert ledger.balance(owner) == ledger.ledger_sum(owner)
        assert ledger.balance(Owner.account(tenant.account_id)) == 5_000_000
    credits = client.get("/v1/external_users/credits", params=ALICE, headers=tenant.headers)
    assert credits.json()["remainingCredits"] == 25
    missing = client.get(
        "/v1/external_users/credits",
        params={**ALICE, "unique_key": "nobody"},
        headers=tenant.headers,
    )
    assert error_of(missing, 404)["code"] == "external_user_not_found"
    assert error_of(client.get("/v1/external_users/credits", headers=tenant.headers), 400)


def test_an_external_user_is_refused_every_account_level_route(
    client: TestClient, tenant: Tenant
) -> None:
    key = new_user(client, tenant, ALICE)["external_api_key"]
    account_only = [
        ("post", "/v1/external_users/session", {"external_user": BOB}),
        ("post", "/v1/external_users/credits/grant", {"external_user": ALICE, "input": {"credits": 1}}),
        ("post", "/v1/assistant/set_system_prompt", {"system_prompt": "x"}),
        ("post", "/v1/create_login_token", {}),
        ("post", "/v1/assistants", {"model": "m"}),
        ("get", "/v1/assistants", None),
        ("post", "/v1/chatkit/sessions", {"user": "u", "workflow": {"id": "w"}}),
        ("get", "/v1/chatkit/threads", None),
    ]  # fmt: skip
    for method, path, body in account_only:
        response = client.request(method, path, json=body, headers=bearer(key))
        assert error_of(response, 403)["code"] == "account_only", path


def test_external_key_header_beside_the_account_key(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    key = new_user(client, tenant, ALICE, credits=0)["external_api_key"]
    grant(db, tenant, 10_000_000)
    both = {**tenant.headers, "x-external-user-api-key": key}
    assert client.get("/v1/credits", headers=both).json()["remainingCredits"] == 0
    assert client.get("/v1/credits", headers=tenant.headers).json()["remainingCredits"] == 10
    alone = client.get("/v1/credits", headers={"x-external-user-api-key": key})
    assert alone.json()["remainingCredits"] == 0
    other = make_tenant(db, "other")
    crossed = client.get("/v1/credits", headers={**other.headers, "x-external-user-api-key": key})
    assert error_of(crossed, 403)["code"] == "external_user_forbidden"
    account_key_as_user = {**tenant.headers, "x-external-user-api-key": tenant.api_key}
    assert error_of(client.get("/v1/credits", headers=account_key_as_user), 401)["code"] == (
        "invalid_external_user_key"
    )
    naming_another = client.get(
        "/v1/external_users/credits", params=BOB | {"provider": "whop"}, headers=both
    )
    assert error_of(naming_another, 403)["code"] == "external_user_forbidden"


def test_usage_charges_are_priced_and_refused_when_short(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    new_user(client, tenant, ALICE, credits=25)

    def charge(**body: Any) -> Any:
        return client.post(
            "/v1/external_users/utils/usage_charge",
            json={"external_user": ALICE, **body},
            headers=tenant.headers,
        )

    tts = charge(utility_type="tts", text="x" * 1000)  # $0.30 -> 30 credits: too much
    assert error_of(tts, 402)["code"] == "insufficient_credits"
    stt = charge(utilityType="speech_to_text", durationSeconds=90)  # 1.5 min x $0.0067
    assert stt.status_code == 200, stt.text
    assert stt.json()["creditsCharged"] == pytest.approx(1.005)
    assert stt.headers["x-credits-charged"] == "1.005"
    crawl = charge(type="firecrawl", firecrawl_credits_used=100, pricing_multiplier=2)
    assert crawl.json()["creditsCharged"] == pytest.approx(20)  # 100 x $0.001 x 2
    explicit = charge(cost_usd=0.03, provider="elevenlabs")
    assert explicit.json()["creditsCharged"] == pytest.approx(3)
    assert explicit.json()["pricing"]["costUsd"] == pytest.approx(0.03)
    assert error_of(charge(cost_usd=0.01), 402)  # 0.995 left
    for bad, param in [
        ({"utility_type": "teleport"}, "utility_type"),
        ({"utility_type": "tts"}, "characters"),
        ({"utility_type": "stt"}, "duration_seconds"),
        ({"cost_usd": -1}, "cost_usd"),
        ({"cost_usd": "NaN"}, "cost_usd"),
        ({"cost_usd": 0.01, "pricing_multiplier": 0}, "pricing_multiplier"),
        ({"cost_usd": 5000}, "cost_usd"),
    ]:
        assert error_of(charge(**bad), 400)["param"] == param, bad
    balance = client.get("/v1/external_users/credits", params=ALICE, headers=tenant.headers)
    assert balance.json()["remainingCredits"] == pytest.approx(0.995)
    summary = balance.json()["external_user"]
    assert summary["total_requests"] == 3
    assert summary["total_credits_used"] == pytest.approx(24.005)
    assert summary["total_credits_purchased"] == 25


def test_library_archive_publish_and_other_users_requests(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 100_000_000)
    new_user(client, tenant, ALICE, credits=50)
    new_user(client, tenant, BOB, credits=50)
    for cost in (0.01, 0.02, 0.03):
        charged = client.post(
            "/v1/external_users/utils/usage_charge",
            json={"external_user": ALICE, "cost_usd": cost},
            headers=tenant.headers,
        )
        assert charged.status_code == 200, charged.text
    library = client.get(
        "/v1/external_users/requests", params={**ALICE, "limit": 2}, headers=tenant.headers
    ).json()["requests"]
    assert [r["credits_charged"] for r in library] == [3, 2]  # newest first, limited
    newest = library[0]["request_id"]

    def act(path: str, identity: dict[str, Any], **body: Any) -> Any:
        return client.post(
            f"/v1/external_users/{path}",
            json={"external_user": identity, "request_id": newest, **body},
            headers=tenant.headers,
        )

    assert error_of(act("archive", BOB), 403)["code"] == "request_forbidden"
    assert error_of(act("publish", BOB, title="mine"), 403)["code"] == "request_forbidden"
    published = act("publish", ALICE, title="Launch", tags="a, b")
    assert published.json()["publication"]["tags"] == ["a", "b"]
    assert act("archive", ALICE).json()["request"]["is_archived"] is True
    assert error_of(act("publish", ALICE), 409)
    missing = client.post(
        "/v1/external_users/archive",
        json={"external_user": ALICE, "request_id": "led_01ZZZZZZZZZZZZZZZZZZZZZZZZ"},
        headers=tenant.headers,
    )
    assert error_of(missing, 404)["param"] == "request_id"
    after = client.get("/v1/external_users/requests", params=ALICE, headers=tenant.headers)
    assert [r["credits_charged"] for r in after.json()["requests"]] == [2, 1]
    for limit in (0, 101, "x"):
        bad = client.get(
            "/v1/external_users/requests", params={**ALICE, "limit": limit}, headers=tenant.headers
        )
        assert error_of(bad, 400)["param"] == "limit"


def test_login_tokens_are_single_use_short_lived_and_auth_tokens_revocable(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    new_user(client, tenant, ALICE)

    def login_token() -> str:
        made = client.post(
            "/v1/external_users/create_login_token",
            json={"external_user": ALICE, "redirect": "/studio"},
            headers=tenant.headers,
        )
        assert made.status_code == 200, made.text
        return str(made.json()["loginToken"])

    token = login_token()
    verified = client.get("/users/verify_token", params={"loginToken": token})
    assert verified.status_code == 200, verified.text
    auth = verified.json()["authToken"]
    assert verified.json()["isExternalUser"] is True
    assert (
        error_of(client.get("/users/verify_token", params={"loginToken": token}), 401)["code"]
        == "used_login_token"
    )
    # The auth token is a bearer for the user's own routes.
    me = client.get("/v1/me", headers=bearer(auth)).json()
    assert me["external_user_id"] == verified.json()["_id"]
    checked = client.get("/users/verify_token", params={"authToken": auth})
    assert checked.json()["_id"] == me["external_user_id"] and checked.json()["expiresAt"]

    expired = login_token()
    with db.session() as session:
        session.execute(
            update(ClientToken)
            .where(ClientToken.kind == "login")
            .where(ClientToken.used_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    refused = client.get("/users/verify_token", params={"loginToken": expired})
    assert error_of(refused, 401)["code"] == "expired_login_token"
    for bogus in ("lt_sy_nope", "sk_sy_" + "a" * 52, ""):
        assert client.get("/users/verify_token", params={"loginToken": bogus}).status_code == 401

    revoked = client.post("/v1/auth_tokens/revoke", json={"authToken": auth}, headers=bearer(auth))
    assert revoked.status_code == 200, revoked.text
    assert error_of(client.get("/v1/me", headers=bearer(auth)), 401)["code"] == "revoked_auth_token"

    account_token = client.post("/v1/create_login_token", headers=tenant.headers).json()
    account_auth = client.get(
        "/users/verify_token", params={"loginToken": account_token["loginToken"]}
    ).json()
    assert account_auth["isExternalUser"] is False
    me = client.get("/v1/me", headers=bearer(account_auth["authToken"])).json()
    assert me["account_id"] == tenant.account_id and me["external_user_id"] is None


def test_no_plaintext_user_key_or_token_is_stored(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    key = new_user(client, tenant, ALICE)["external_api_key"]
    login = client.post(
        "/v1/external_users/create_login_token",
        json={"external_user": ALICE},
        headers=tenant.headers,
    ).json()["loginToken"]
    auth = client.get("/users/verify_token", params={"loginToken": login}).json()["authToken"]
    assert client.get("/v1/me", headers=bearer(auth)).status_code == 200
    dump = dump_database(db)
    assert "whop:alice" in dump
    for secret in (key, login, auth):
        assert secret not in dump and secret[-40:] not in dump


def test_embeddings_route_bills_the_caller_and_validates(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    made = client.post("/v1/embeddings", json={"input": ["one", "two"]}, headers=tenant.headers)
    assert made.status_code == 200, made.text
    assert len(made.json()["data"]) == 2 and float(made.headers["x-credits-charged"]) > 0
    root = client.post("/v2/external/embeddings", json={"input": "one"}, headers=tenant.headers)
    alone, batched = root.json()["data"][0]["embedding"], made.json()["data"][0]["embedding"]
    assert np.allclose(alone, batched, atol=1e-5)  # batch padding moves the last digits
    for body, param in [
        ({"input": []}, "input"),
        ({"input": [1, 2, 3]}, "input[0]"),
        ({"input": ["ok", "  "]}, "input[1]"),
        ({"input": "x", "dimensions": 1536}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": ["x"] * 3000}, "input"),
    ]:
        assert (
            error_of(client.post("/v1/embeddings", json=body, headers=tenant.headers), 400)["param"]
            == param
        )
    with db.session(write=False) as session:
        ledger = Ledger(session)
        owner = Owner.account(tenant.account_id)
        assert ledger.balance(owner) == ledger.ledger_sum(owner)
