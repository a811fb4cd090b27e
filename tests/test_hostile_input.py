"""Every POST route of the OpenAPI document against junk bodies: a 4xx envelope, never a 500,
nothing charged."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

JUNK: list[tuple[str, bytes]] = [
    ("array", b"[]"),
    ("string", b'"hello"'),
    ("number", b"123"),
    ("null", b"null"),
    ("truncated", b'{"input": '),
    ("invalid utf-8", b'{"input": "\xff\xfe"}'),
    ("deep nesting", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    (
        "wrong types",
        json.dumps(
            {
                "session_id": ["x"],
                "input": 5,
                "records": "no",
                "template_id": {"a": 1},
                "message": [],
                "search_term": 7,
                "user": 1,
                "workflow": "x",
                "role": 3,
                "content": {},
                "metadata": "m",
                "limit": "ten",
                "max_output_tokens": -1,
                "temperature": "hot",
                "messages": 1,
                "name": [],
            }
        ).encode(),
    ),
    (
        "long strings",
        json.dumps(
            {
                "input": "x" * 300_000,
                "search_term": "y" * 5000,
                "system_prompt": "z" * 200_000,
                "message": "m" * 30_000,
                "user": "u" * 1000,
                "session_id": "s" * 500,
            }
        ).encode(),
    ),
    (
        "huge arrays",
        json.dumps(
            {
                "records": [{"id": str(i)} for i in range(20_001)],
                "ids": [str(i) for i in range(20_001)],
                "source_ids": ["x"] * 20_001,
                "tools": [{"type": "function"}] * 500,
                "metadata": {str(i): "v" for i in range(1000)},
            }
        ).encode(),
    ),
]


def post_routes(client: TestClient) -> list[str]:
    paths = client.get("/openapi.json").json()["paths"]
    routes = []
    for path, methods in paths.items():
        if "post" in methods:
            routes.append(path.replace("{", "").replace("}", "") if "{" in path else path)
    return sorted(routes)


def test_junk_bodies_never_500_and_never_charge(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 50_000_000)
    routes = post_routes(client)
    assert len(routes) >= 20
    headers = {**tenant.headers, "content-type": "application/json"}
    checked = 0
    for route in routes:
        for label, body in JUNK:
            response = client.post(route, content=body, headers=headers)
            assert response.status_code < 500, (route, label, response.text[:300])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"], (route, label)
            checked += 1
    with db.session(write=False) as session:
        ledger = Ledger(session)
        owner = Owner.account(tenant.account_id)
        kinds = [e.kind for e in ledger.store.entries(owner.type, owner.id, limit=10_000)]
        assert ledger.balance(owner) == ledger.ledger_sum(owner)
        assert ledger.store.count_open_reservations() == 0
    assert "charge" not in kinds, kinds
    assert checked == len(routes) * len(JUNK)


def test_unauthenticated_posts_are_401_everywhere(client: TestClient) -> None:
    for route in post_routes(client):
        response = client.post(route, json={})
        assert response.status_code == 401, (route, response.status_code)
        assert response.json()["error"]["type"] == "authentication_error"
