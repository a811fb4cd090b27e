"""The authorization matrix of external users, sessions and templates, on both engines.

Callers {account A, its users A1 and A2, account B (with its user B1), no key} x objects owned
by {A, A1, A2, B, B1, nobody (a missing id)} x every route of the external-user issue and the
session/template routes. Each cell has one expected status, computed by the rule below; no
cross-tenant read or write may succeed, and no refused write may leave a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sessionary.conversations.models import ConversationMessage
from sessionary.kit.db import Database
from tests.conftest import make_tenant
from tests.test_credits_http import grant

ACCOUNT_OF = {"A": "A", "A1": "A", "A2": "A", "B": "B", "B1": "B"}
IDENTITIES = {name: {"provider": "app", "unique_key": name.lower()} for name in ("A1", "A2", "B1")}
MISSING = {
    "session": "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "template": "tmpl_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "response": "resp_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "request": "led_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
}
RECORDS = [{"id": "1", "title": "red running shoes"}, {"id": "2", "title": "blue raincoat"}]


@dataclass(frozen=True)
class Party:
    name: str
    headers: dict[str, str]

    @property
    def account(self) -> str:
        return ACCOUNT_OF[self.name]

    @property
    def user(self) -> str | None:
        return self.name if self.name in IDENTITIES else None

    @property
    def acts_as(self) -> str:
        """Whom it acts for on external-user routes: itself, or the account's first user."""
        return self.user or f"{self.name}1"


@dataclass(frozen=True)
class Route:
    label: str
    kind: str  # the object it addresses: session, template, response, request
    call: Callable[[TestClient, Party | None, str], Any]
    external: bool = False  # an /external_users route: acts for a user
    writes: int = 0  # messages a success appends to a session


def _headers(caller: Party | None) -> dict[str, str]:
    return caller.headers if caller else {}


def _body(caller: Party | None, **body: Any) -> dict[str, Any]:
    """External-route bodies: the account names the user it acts for; a user names no one."""
    if caller is not None and caller.user is None:
        body["external_user"] = IDENTITIES[caller.acts_as]
    return body


def post(path: str, external: bool = False, **fields: Any) -> Callable[..., Any]:
    def call(client: TestClient, caller: Party | None, target: str) -> Any:
        body = {k: (target if v == "{id}" else v) for k, v in fields.items()}
        body = _body(caller, **body) if external else body
        return client.post(path.replace("{id}", target), json=body, headers=_headers(caller))

    return call


def get(path: str, **params: Any) -> Callable[..., Any]:
    def call(client: TestClient, caller: Party | None, target: str) -> Any:
        query = {k: (target if v == "{id}" else v) for k, v in params.items()}
        return client.get(path.replace("{id}", target), params=query, headers=_headers(caller))

    return call


TURN = {"input": "Say hi.", "max_output_tokens": 2}
ROUTES = [
    Route("completion", "session", post("/v1/assistant/completion", session_id="{id}", **TURN), writes=2),
    Route("thread", "session", get("/v1/threads/{id}")),
    Route("thread messages", "session", get("/v1/threads/{id}/messages")),
    Route("add message", "session", post("/v1/threads/{id}/messages", role="user", content="x"), writes=1),
    Route("external completion", "session",
          post("/v1/external_users/assistant/completion", True, session_id="{id}", **TURN),
          external=True, writes=2),
    Route("embedding status", "template", get("/v1/chat/embedding_status", template_id="{id}")),
    Route("search", "template",
          post("/v1/chat/search_against_embedding", template_id="{id}", search_term="shoes")),
    Route("similar", "template",
          post("/v1/chat/similar_to_embedding", template_id="{id}", search_term="coat")),
    Route("update template", "template",
          post("/v1/chat/update_embedding", template_id="{id}", records=RECORDS[:1])),
    Route("delete records", "template",
          post("/v1/chat/delete_embedding", template_id="{id}", ids=["none"])),
    Route("response", "response", get("/v1/responses/{id}")),
    Route("input items", "response", get("/v1/responses/{id}/input_items")),
    Route("publish", "request", post("/v1/external_users/publish", True, request_id="{id}"),
          external=True),
    Route("archive", "request", post("/v1/external_users/archive", True, request_id="{id}"),
          external=True),
]  # fmt: skip


def expected(route: Route, caller: Party | None, owner: str | None) -> int:
    if caller is None:
        return 401
    if owner is None:
        return 404
    acting = caller.acts_as if route.external else caller.user
    if ACCOUNT_OF[owner] != caller.account:
        return 403
    if acting is not None and owner != acting:
        return 403
    return 200


# Routes that name a user rather than an object: (label, method, path, extra body, account only)
NAMED = [
    ("credits", "get", "/v1/external_users/credits", {}, False),
    ("requests", "get", "/v1/external_users/requests", {}, False),
    ("set prompt", "post", "/v1/external_users/assistant/set_system_prompt",
     {"system_prompt": "Be brief."}, False),
    ("assistant session", "post", "/v1/external_users/utils/assistant_session", {}, False),
    ("usage charge", "post", "/v1/external_users/utils/usage_charge", {"cost_usd": 0.01}, False),
    ("login token", "post", "/v1/external_users/create_login_token", {}, False),
    ("plain text", "post", "/v1/external_users/generate_embeddings_from_plain_text",
     {"plain_text": ["Short text."]}, False),
    ("user embeddings", "post", "/v1/external_users/embeddings", {"input": "hello"}, False),
    ("grant", "post", "/v1/external_users/credits/grant", {"input": {"credits": 1}}, True),
]  # fmt: skip


def expected_named(caller: Party | None, named: str, account_only: bool) -> int:
    if caller is None:
        return 401
    if caller.user is not None:
        return 403 if account_only or named != caller.user else 200
    return 200 if named in ACCOUNT_OF and ACCOUNT_OF[named] == caller.account else 404


@pytest.fixture
def world(client: TestClient, db: Database) -> tuple[dict[str, Party], dict[str, dict[str, str]]]:
    """Parties and the objects each owns (made with the owner's own credential)."""
    tenants = {"A": make_tenant(db, "A"), "B": make_tenant(db, "B")}
    parties = {name: Party(name, t.headers) for name, t in tenants.items()}
    for tenant in tenants.values():
        grant(db, tenant, 1000_000_000)
    for name, identity in IDENTITIES.items():
        owner = tenants[ACCOUNT_OF[name]]
        made = client.post(
            "/v1/external_users/session", json={"external_user": identity}, headers=owner.headers
        )
        granted = client.post(
            "/v1/external_users/credits/grant",
            json={"external_user": identity, "input": {"credits": 200}},
            headers=owner.headers,
        )
        assert granted.status_code == 200, granted.text
        parties[name] = Party(name, {"Authorization": f"Bearer {made.json()['external_api_key']}"})
    objects: dict[str, dict[str, str]] = {}
    for name, party in parties.items():
        session_id = client.post("/v1/assistant/session", json={}, headers=party.headers)
        session = session_id.json()["session_id"]
        turn = client.post(
            "/v1/assistant/completion", json={"session_id": session, **TURN}, headers=party.headers
        )
        template = client.post(
            "/v1/chat/create_embedding", json={"records": RECORDS}, headers=party.headers
        )
        assert turn.status_code == template.status_code == 200, (turn.text, template.text)
        objects[name] = {
            "session": session,
            "response": turn.json()["id"],
            "template": template.json()["template_id"],
        }
        if party.user:
            charged = client.post(
                "/v1/external_users/utils/usage_charge",
                json={"cost_usd": 0.01},
                headers=party.headers,
            )
            assert charged.status_code == 200, charged.text
            library = client.get("/v1/external_users/requests", headers=party.headers)
            objects[name]["request"] = library.json()["requests"][0]["request_id"]
    return parties, objects


def message_counts(db: Database, objects: dict[str, dict[str, str]]) -> dict[str, int]:
    with db.session(write=False) as session:
        return {
            owner: int(
                session.scalar(
                    select(func.count())
                    .select_from(ConversationMessage)
                    .where(ConversationMessage.session_id == ids["session"])
                )
                or 0
            )
            for owner, ids in objects.items()
        }


def test_authorization_matrix(
    client: TestClient,
    db: Database,
    world: tuple[dict[str, Party], dict[str, dict[str, str]]],
) -> None:
    parties, objects = world
    callers: list[Party | None] = [parties[n] for n in ("A", "A1", "A2", "B")] + [None]
    before = message_counts(db, objects)
    writes = dict.fromkeys(objects, 0)
    unexpected: list[str] = []
    cells = 0
    for route in ROUTES:
        owners: list[str | None] = [o for o in objects if route.kind in objects[o]] + [None]
        for caller in callers:
            for owner in owners:
                target = objects[owner][route.kind] if owner else MISSING[route.kind]
                want = expected(route, caller, owner)
                got = route.call(client, caller, target)
                cells += 1
                if got.status_code != want:
                    who = caller.name if caller else "no key"
                    unexpected.append(
                        f"{route.label}: {who} on {owner}'s -> {got.status_code}, want {want}: "
                        f"{got.text[:200]}"
                    )
                elif want == 200 and owner is not None:
                    writes[owner] += route.writes
                if want != 200 and got.status_code == want:
                    assert "error" in got.json(), got.text
    for label, method, path, extra, account_only in NAMED:
        for caller in callers:
            for named in (*IDENTITIES, "nobody"):
                identity = IDENTITIES.get(named, {"provider": "app", "unique_key": "nobody"})
                want = expected_named(caller, named, account_only)
                if method == "get":
                    got = client.get(path, params=identity, headers=_headers(caller))
                else:
                    body = {"external_user": identity, **extra}
                    got = client.post(path, json=body, headers=_headers(caller))
                cells += 1
                if got.status_code != want:
                    who = caller.name if caller else "no key"
                    unexpected.append(
                        f"{label}: {who} naming {named} -> {got.status_code}, want {want}: "
                        f"{got.text[:200]}"
                    )
    after = message_counts(db, objects)
    print(f"authorization matrix: {cells} cells, {len(unexpected)} unexpected answers")
    assert cells >= 400
    assert unexpected == [], "\n".join(unexpected)
    # Refused writes left nothing behind: each session grew by exactly the allowed writes.
    assert {o: after[o] - before[o] for o in objects} == writes
