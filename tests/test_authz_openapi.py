"""The authorization matrix over every operation of the OpenAPI document, on both engines.

Roles: account A, A's external users A1 and A2, account B, a ChatKit client secret of A, no key,
a revoked key. Targets: the role's own object, others' objects, a missing id. Methods: every one
the path serves, and those it does not (405). Who may call a route is read from the route's own
dependencies (account-only, account or user, or any credential incl. a client secret), so a route
that loses its guard fails here. Expected status per cell comes from one rule; the figure is the
number of cells and of unexpected answers (0).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.accounts.principal import get_any_principal, get_principal, get_user_principal
from sessionary.accounts.service import AccountService
from sessionary.kit.db import Database
from sessionary.kit.routing import effective_routes
from tests.conftest import make_tenant
from tests.test_credits_http import grant

ACCOUNT_OF = {"A": "A", "A1": "A", "A2": "A", "B": "B", "B1": "B", "CS": "A"}
USERS = {"A1", "A2", "B1"}
PUBLIC = {"/healthz", "/readyz"}
OK = "ok"
TURN = {"input": "Hi.", "max_output_tokens": 1}
RECORDS = [{"id": "1", "title": "red shoes"}, {"id": "2", "title": "blue coat"}]
MISSING = {
    "session": "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "message": "msg_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "response": "resp_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "background": "resp_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "template": "tmpl_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "profile": "asst_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "chatkit": "cksess_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "request": "led_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "token": "tok_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "key": "key_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "conversation": "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "item": "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ/msg_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
    "completion": "chatcmpl_01ZZZZZZZZZZZZZZZZZZZZZZZZ",
}
# Kinds whose routes answer another owner's object as a missing one (OpenAI's Conversations API,
# stored chat completions).
HIDDEN = {"conversation", "item", "completion"}
# Routes a client secret may call but an external user may not (the account's ChatKit threads).
NOT_FOR_USERS = {("GET", "/v1/chatkit/threads")}


def auth_class(route: Any) -> str:
    """'account', 'user' or 'session' from the principal dependency the route resolves."""
    calls: set[Any] = set()
    stack = [route.dependant]
    while stack:
        node = stack.pop()
        calls.add(node.call)
        stack.extend(node.dependencies)
    if get_principal in calls:
        return "account"
    if get_user_principal in calls:
        return "user"
    if get_any_principal in calls:
        return "session"
    return "public"


@dataclass
class World:
    client: TestClient
    headers: dict[str, dict[str, str]]
    identity: dict[str, dict[str, str]]

    def as_(self, owner: str) -> dict[str, str]:
        return self.headers[owner]

    def post(self, owner: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post(path, json=body, headers=self.as_(owner))
        assert answer.status_code == 200, (owner, path, answer.text)
        result: dict[str, Any] = answer.json()
        return result

    # Factories: a fresh object of `kind` owned by `owner`, made with the owner's credential.

    def session(self, owner: str) -> str:
        if owner == "CS":
            return self.cs_thread
        return str(self.post(owner, "/v1/assistant/session", {})["session_id"])

    def message(self, owner: str) -> str:
        session = self.session(owner)
        made = self.post(owner, f"/v1/threads/{session}/messages", {"role": "user", "content": "x"})
        return f"{session}/{made['id']}"

    def response(self, owner: str) -> str:
        session = self.session(owner)
        return str(
            self.post(owner, "/v1/assistant/completion", {"session_id": session, **TURN})["id"]
        )

    def background(self, owner: str) -> str:
        return str(self.post(owner, "/v1/responses", {"background": True, **TURN})["id"])

    def completion(self, owner: str) -> str:
        body = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 1, "store": True}
        return str(self.post(owner, "/v1/chat/completions", body)["id"])

    def conversation(self, owner: str) -> str:
        return str(self.post(owner, "/v1/conversations", {})["id"])

    def item(self, owner: str) -> str:
        made = self.post(owner, "/v1/conversations", {"items": [{"role": "user", "content": "x"}]})
        listed = self.client.get(f"/v1/conversations/{made['id']}/items", headers=self.as_(owner))
        return f"{made['id']}/{listed.json()['data'][0]['id']}"

    def template(self, owner: str) -> str:
        made = self.post(owner, "/v1/chat/create_embedding", {"records": RECORDS})
        return str(made["template_id"])

    def profile(self, owner: str) -> str:
        return str(self.post(owner, "/v1/assistants", {"name": owner})["id"])

    def token(self, owner: str) -> str:
        login = self.post(owner, "/v1/create_login_token", {})["loginToken"]
        verified = self.client.get("/users/verify_token", params={"loginToken": login})
        auth = verified.json()["authToken"]
        listed = self.client.get("/v1/auth_tokens", params={"limit": 100}, headers=self.as_(owner))
        return str(next(t["id"] for t in listed.json()["data"] if auth.startswith(t["prefix"])))

    def key(self, owner: str) -> str:
        return str(self.post(owner, "/v1/keys", {"name": "spare"})["id"])

    def chatkit(self, owner: str) -> str:
        body = {"user": "u", "workflow": {"id": "default"}}
        return str(self.post(owner, "/v1/chatkit/sessions", body)["id"])

    def request(self, owner: str) -> str:
        self.post(owner, "/v1/external_users/utils/usage_charge", {"cost_usd": 0.001})
        library = self.client.get("/v1/external_users/requests", headers=self.as_(owner))
        return str(library.json()["requests"][0]["request_id"])

    cs_thread: str = ""
    model: str = ""


# What each operation needs: the kind of object it addresses and how to call it on a target.
Build = Callable[[str, str], tuple[str, dict[str, Any] | None, dict[str, Any] | None]]


def _path(param: str, **body: Any) -> Build:
    return lambda route, target: (route.replace(param, target), body or None, None)


def _message(**body: Any) -> Build:
    def build(route: str, target: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        session, _, message = target.partition("/")
        path = route.replace("{thread_id}", session).replace("{message_id}", message or "x")
        return path, body or None, None

    return build


def _item(**body: Any) -> Build:
    def build(route: str, target: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        conversation, _, item = target.partition("/")
        path = route.replace("{conversation_id}", conversation).replace("{item_id}", item)
        return path, body or None, None

    return build


def _body(field: str, **extra: Any) -> Build:
    return lambda route, target: (route, {field: target, **extra}, None)


def _query(field: str) -> Build:
    return lambda route, target: (route, None, {field: target})


CASES: dict[tuple[str, str], tuple[str | None, Build | None, dict[str, Any] | None]] = {
    # (method, path): (object kind, how to address it, or the body of an object-less call)
    ("POST", "/v1/assistant/completion"): ("session", _body("session_id", **TURN), None),
    ("POST", "/v1/responses"): ("session", _body("conversation", **TURN), None),
    ("GET", "/v1/responses/{response_id}"): ("response", _path("{response_id}"), None),
    ("DELETE", "/v1/responses/{response_id}"): ("response", _path("{response_id}"), None),
    ("GET", "/v1/responses/{response_id}/input_items"): (
        "response", _path("{response_id}"), None),
    ("POST", "/v1/responses/{response_id}/cancel"): ("background", _path("{response_id}"), None),
    ("GET", "/v1/chat/completions/{completion_id}"): ("completion", _path("{completion_id}"), None),
    ("POST", "/v1/chat/completions/{completion_id}"): (
        "completion", _path("{completion_id}", metadata={"k": "v"}), None),
    ("DELETE", "/v1/chat/completions/{completion_id}"): (
        "completion", _path("{completion_id}"), None),
    ("GET", "/v1/chat/completions/{completion_id}/messages"): (
        "completion", _path("{completion_id}"), None),
    ("GET", "/v1/threads/{thread_id}"): ("session", _path("{thread_id}"), None),
    ("POST", "/v1/threads/{thread_id}"): (
        "session", _path("{thread_id}", metadata={"k": "v"}), None),
    ("DELETE", "/v1/threads/{thread_id}"): ("session", _path("{thread_id}"), None),
    ("POST", "/v1/threads/{thread_id}/messages"): (
        "session", _path("{thread_id}", role="user", content="x"), None),
    ("GET", "/v1/threads/{thread_id}/messages"): ("session", _path("{thread_id}"), None),
    ("GET", "/v1/threads/{thread_id}/messages/{message_id}"): ("message", _message(), None),
    ("POST", "/v1/threads/{thread_id}/messages/{message_id}"): (
        "message", _message(metadata={"k": "v"}), None),
    ("DELETE", "/v1/threads/{thread_id}/messages/{message_id}"): (
        "message", _message(), None),
    ("GET", "/v1/conversations/{conversation_id}"): (
        "conversation", _path("{conversation_id}"), None),
    ("POST", "/v1/conversations/{conversation_id}"): (
        "conversation", _path("{conversation_id}", metadata={"k": "v"}), None),
    ("DELETE", "/v1/conversations/{conversation_id}"): (
        "conversation", _path("{conversation_id}"), None),
    ("GET", "/v1/conversations/{conversation_id}/items"): (
        "conversation", _path("{conversation_id}"), None),
    ("POST", "/v1/conversations/{conversation_id}/items"): (
        "conversation", _path("{conversation_id}", items=[{"role": "user", "content": "x"}]), None),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): ("item", _item(), None),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): ("item", _item(), None),
    ("POST", "/v1/conversations"): (None, None, {}),
    ("GET", "/v1/assistants/{assistant_id}"): ("profile", _path("{assistant_id}"), None),
    ("POST", "/v1/assistants/{assistant_id}"): (
        "profile", _path("{assistant_id}", name="renamed"), None),
    ("DELETE", "/v1/assistants/{assistant_id}"): ("profile", _path("{assistant_id}"), None),
    ("POST", "/v1/chatkit/sessions/{session_id}/cancel"): (
        "chatkit", _path("{session_id}"), None),
    ("GET", "/v1/chatkit/threads/{thread_id}"): ("chatkit", _path("{thread_id}"), None),
    ("DELETE", "/v1/chatkit/threads/{thread_id}"): ("chatkit", _path("{thread_id}"), None),
    ("GET", "/v1/chatkit/threads/{thread_id}/items"): ("chatkit", _path("{thread_id}"), None),
    ("POST", "/v1/chat/update_embedding"): ("template", _body("template_id", records=RECORDS[:1]), None),
    ("POST", "/v1/chat/delete_embeddings"): ("template", _body("template_id"), None),
    ("POST", "/v1/chat/delete_embedding"): ("template", _body("template_id", ids=["none"]), None),
    ("POST", "/v1/chat/search_against_embedding"): (
        "template", _body("template_id", search_term="shoes"), None),
    ("POST", "/v1/chat/search_against_embeddings"): (
        "template", _body("template_id", search_term="shoes"), None),
    ("POST", "/v1/chat/similar_to_embedding"): (
        "template", _body("template_id", search_term="coat"), None),
    ("GET", "/v1/chat/embedding_status"): ("template", _query("template_id"), None),
    ("POST", "/v1/external_users/archive"): ("request", _body("request_id"), None),
    ("POST", "/v1/external_users/publish"): ("request", _body("request_id"), None),
    # Object-less calls: the body a success needs.
    ("POST", "/v1/create_login_token"): (None, None, {}),
    ("POST", "/v1/assistant/session"): (None, None, {}),
    ("POST", "/v1/assistant/set_system_prompt"): (None, None, {"system_prompt": "Be brief."}),
    ("POST", "/v1/chat/enhance"): (None, None, {"message": "good shoes"}),
    ("POST", "/v1/threads"): (None, None, {}),
    ("POST", "/v1/assistants"): (None, None, {"name": "p"}),
    ("DELETE", "/v1/auth_tokens/{token_id}"): ("token", _path("{token_id}"), None),
    ("DELETE", "/v1/keys/{key_id}"): ("key", _path("{key_id}"), None),
    ("POST", "/v1/chatkit/sessions"): (None, None, {"user": "u", "workflow": {"id": "default"}}),
    ("POST", "/v1/chat/create_embedding"): (None, None, {"records": RECORDS}),
    ("POST", "/v1/chat/generate_embeddings_from_plain_text"): (None, None, {"plain_text": ["x"]}),
    ("POST", "/v1/chat/create_embedding_from_url"): (None, None, None),  # 400 by design
    ("POST", "/v1/embeddings"): (None, None, {"input": "x"}),
    ("POST", "/v1/chat/completions"): (
        None, None, {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 1}),
    ("GET", "/v1/chat/completions"): (None, None, None),
    ("POST", "/v2/external/embeddings"): (None, None, {"input": "x"}),
    ("POST", "/v1/external_users/embeddings"): (None, None, {"input": "x"}),
    ("POST", "/v1/external_users/utils/assistant_session"): (None, None, {}),
    ("POST", "/v1/external_users/assistant/set_system_prompt"): (None, None, {"system_prompt": "x"}),
    ("POST", "/v1/external_users/generate_embeddings_from_plain_text"): (
        None, None, {"plain_text": ["x"]}),
    ("POST", "/v1/external_users/utils/usage_charge"): (None, None, {"cost_usd": 0.001}),
    ("POST", "/v1/external_users/create_login_token"): (None, None, {}),
    ("GET", "/v1/external_users/credits"): (None, None, None),
    ("GET", "/v1/external_users/requests"): (None, None, None),
    ("POST", "/v1/external_users/session"): (None, None, {"external_user": {"provider": "p", "unique_key": "new"}}),
    ("POST", "/v1/external_users/credits/grant"): (None, None, {"input": {"credits": 1}}),
    ("POST", "/v1/external_users/assistant/completion"): ("session", _body("session_id", **TURN), None),
    ("POST", "/v1/auth_tokens/revoke"): (None, None, None),  # 400 without a token by design
}  # fmt: skip
BY_DESIGN_400 = {("POST", "/v1/chat/create_embedding_from_url"), ("POST", "/v1/auth_tokens/revoke")}
DESTRUCTIVE = {"DELETE", "cancel", "archive"}
EXTERNAL_PREFIX = ("/v1/external_users/", "/v2/external/")


def acting(role: str, path: str) -> str:
    """On external-user routes the account acts for its first user (A -> A1, B -> B1)."""
    if path.startswith(EXTERNAL_PREFIX) and role in ("A", "B"):
        return f"{role}1"
    return role


def expected(
    method: str, path: str, cls: str, role: str, owner: str | None, kind: str | None
) -> str | int:
    if path == "/users/verify_token":  # the bearer itself is verified
        return 401 if role in ("none", "revoked", "CS") else OK
    if cls == "public":
        return OK
    if role in ("none", "revoked"):
        return 401
    if role == "CS" and cls != "session":
        return 403
    if role in USERS and (cls == "account" or (method, path) in NOT_FOR_USERS):
        return 403
    if (method, path) in BY_DESIGN_400:
        return 400
    actor = acting(role, path)
    if kind is None:
        return OK
    if owner is None:
        return 404
    if actor == "CS":
        # A client secret reaches the ChatKit threads of its own user ("u", as every ChatKit
        # session made here) in its own account.
        return OK if owner == "CS" or (kind == "chatkit" and owner == "A") else 403
    denied = 404 if kind in HIDDEN else 403
    if ACCOUNT_OF[owner] != ACCOUNT_OF[actor]:
        return denied
    if actor in USERS and owner != actor:
        return denied
    return OK


def owners_for(role: str, kind: str) -> list[str | None]:
    owners = {
        "session": ["A", "A1", "A2", "B", "B1", "CS"],
        "message": ["A", "A1", "A2", "B"],
        "response": ["A", "A1", "A2", "B"],
        "background": ["A", "A1", "A2", "B"],
        "template": ["A", "A1", "A2", "B"],
        "profile": ["A", "B"],
        "chatkit": ["A", "B", "CS"],
        "request": ["A1", "A2", "B1"],
        "token": ["A", "B"],
        "key": ["A", "B"],
        "conversation": ["A", "A1", "A2", "B"],
        "item": ["A", "A1", "A2", "B"],
        "completion": ["A", "A1", "A2", "B"],
    }[kind]
    return [*owners, None]


@pytest.fixture
def world(app: FastAPI, client: TestClient, db: Database) -> World:
    a, b = make_tenant(db, "A"), make_tenant(db, "B")
    for tenant in (a, b):
        grant(db, tenant, 100_000_000_000)
    world = World(client, {"A": a.headers, "B": b.headers}, {})
    for user in sorted(USERS):
        account = "A" if user.startswith("A") else "B"
        identity = {"provider": "app", "unique_key": user.lower()}
        made = world.post(account, "/v1/external_users/session", {"external_user": identity})
        world.post(
            account,
            "/v1/external_users/credits/grant",
            {"external_user": identity, "input": {"credits": 500}},
        )
        world.headers[user] = {"Authorization": f"Bearer {made['external_api_key']}"}
        world.identity[user] = identity
    secret = world.post(
        "A",
        "/v1/chatkit/sessions",
        {
            "user": "u",
            "workflow": {"id": "default"},
            "rate_limits": {"max_requests_per_1_minute": 10_000},
        },
    )
    world.headers["CS"] = {"Authorization": f"Bearer {secret['client_secret']}"}
    world.cs_thread = secret["id"]
    world.model = client.get("/v1/models", headers=a.headers).json()["data"][0]["id"]
    with db.session() as session:
        revoked = AccountService(session).create_key(a.account_id, "old")
        AccountService(session).revoke_key(revoked.key.id)
    world.headers["revoked"] = {"Authorization": f"Bearer {revoked.plaintext}"}
    world.headers["none"] = {}
    return world


def test_every_operation_every_role_every_target(app: FastAPI, world: World) -> None:
    client = world.client
    cached: dict[tuple[str, str], str] = {}

    def target_of(kind: str, owner: str, fresh: bool) -> str:
        if owner == "CS":
            return world.cs_thread  # its one session (a ChatKit thread)
        key = (kind, owner)
        if fresh or key not in cached:
            made = str(getattr(world, kind)(owner))
            if fresh:
                return made
            cached[key] = made
        return cached[key]

    routes = [
        r
        for r in effective_routes(app)
        if getattr(r, "include_in_schema", False) and getattr(r, "dependant", None)
    ]
    documented = set(app.openapi()["paths"])
    roles = ["A", "A1", "A2", "B", "CS", "none", "revoked"]
    cells = 0
    unexpected: list[str] = []
    served: dict[str, set[str]] = {}
    for route in routes:
        route_path = re.sub(r":\w+}", "}", route.path)  # {model_id:path} -> {model_id}
        assert route_path in documented
        for method in route.methods:
            served.setdefault(route_path, set()).add(method)
            case = CASES.get((method, route_path))
            kind, build, body = case if case else (None, None, None)
            cls = auth_class(route)
            destructive = method == "DELETE" or route_path.endswith(("/cancel", "/archive"))
            for role in roles:
                owners: list[str | None] = owners_for(role, kind) if kind else [None]
                for owner in owners:
                    if owner == "CS" and (destructive or kind not in ("session", "chatkit")):
                        continue
                    want = expected(method, route_path, cls, role, owner, kind)
                    if kind is None:
                        path, json_body, params = route_path, body, None
                    else:
                        assert build is not None
                        target = (
                            MISSING[kind]
                            if owner is None
                            else target_of(kind, owner, destructive and want == OK)
                        )
                        path, json_body, params = build(route_path, target)
                    path = path.replace("{model_id}", world.model)
                    if route_path.startswith(EXTERNAL_PREFIX) and role in ("A", "B"):
                        named = world.identity[acting(role, route_path)]
                        if method == "GET":
                            params = {**(params or {}), **named}
                        else:
                            json_body = {"external_user": named, **(json_body or {})}
                    answer = client.request(
                        method, path, json=json_body, params=params, headers=world.headers[role]
                    )
                    cells += 1
                    got = answer.status_code
                    fine = (200 <= got < 300) if want == OK else got == want
                    if not fine:
                        unexpected.append(
                            f"{method} {route_path} as {role} on {owner}'s: {got}, want {want}: "
                            f"{answer.text[:160]}"
                        )
                    elif want != OK:
                        assert set(answer.json()) == {"error"}, answer.text
    # Methods a path does not serve: 405 for anyone, with an Allow header that is true.
    for path, methods in served.items():
        # Token ids have a shape of their own in the route (so `/auth_tokens/revoke` is no id).
        concrete = path.replace("{token_id}", MISSING["token"]).replace("{", "").replace("}", "")
        for method in sorted({"GET", "POST", "DELETE", "PUT", "PATCH"} - methods):
            for role in ("A", "none"):
                answer = client.request(method, concrete, headers=world.headers[role])
                cells += 1
                allowed = {m.strip() for m in answer.headers.get("allow", "").split(",")}
                if answer.status_code != 405 or not methods <= allowed:
                    unexpected.append(f"{method} {path} as {role}: {answer.status_code}")
    print(f"authorization matrix (OpenAPI): {cells} cells, {len(unexpected)} unexpected answers")
    assert cells > 1500
    assert unexpected == [], "\n".join(unexpected[:40])
