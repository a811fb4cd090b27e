"""Cursor pagination on every list, as the seeds describe it: `after` is the next page, `before`
"defines your place in the list … to fetch the previous page", in both orders, with `first_id`,
`last_id` and `has_more` right. Each list holds 25 items of a fresh account."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow
N = 25


def _post(client: TestClient, tenant: Tenant, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def thread_messages(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    thread = _post(client, tenant, "/v1/threads", {})
    ids = [
        _post(
            client,
            tenant,
            f"/v1/threads/{thread['id']}/messages",
            {"role": "user", "content": f"m{i}"},
        )["id"]
        for i in range(N)
    ]
    return f"/v1/threads/{thread['id']}/messages", ids


def _items(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"m{i}"} for i in range(start, start + count)]


def conversation_items(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    created = _post(client, tenant, "/v1/conversations", {"items": _items(20)})
    path = f"/v1/conversations/{created['id']}/items"
    _post(client, tenant, path, {"items": _items(5, 20)})
    listed = client.get(path, params={"order": "asc", "limit": 100}, headers=tenant.headers)
    return path, [item["id"] for item in listed.json()["data"]]


def sessions(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    ids = [_post(client, tenant, "/v1/assistant/session", {})["session_id"] for _ in range(N)]
    return "/v1/sessions", ids


def chatkit_threads(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    body = {"user": "u", "workflow": {"id": "default"}}
    return "/v1/chatkit/threads", [
        _post(client, tenant, "/v1/chatkit/sessions", body)["id"] for _ in range(N)
    ]


def chatkit_items(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    chat = _post(
        client, tenant, "/v1/chatkit/sessions", {"user": "u", "workflow": {"id": "default"}}
    )
    ids: list[str] = []
    for start, count in ((0, 20), (20, 5)):
        added = _post(
            client, tenant, f"/v1/conversations/{chat['id']}/items", {"items": _items(count, start)}
        )
        ids += [item["id"] for item in added["data"]]
    return f"/v1/chatkit/threads/{chat['id']}/items", ids


def input_items(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    response = _post(client, tenant, "/v1/responses", {"input": _items(N), "max_output_tokens": 1})
    path = f"/v1/responses/{response['id']}/input_items"
    listed = client.get(path, params={"order": "asc", "limit": 100}, headers=tenant.headers)
    return path, [item["id"] for item in listed.json()["data"]]


def assistants(client: TestClient, tenant: Tenant) -> tuple[str, list[str]]:
    body = {"model": "smollm2-135m-instruct", "instructions": "x"}
    return "/v1/assistants", [_post(client, tenant, "/v1/assistants", body)["id"] for _ in range(N)]


LISTS: dict[str, Callable[[TestClient, Tenant], tuple[str, list[str]]]] = {
    "thread messages": thread_messages,
    "conversation items": conversation_items,
    "sessions": sessions,
    "chatkit threads": chatkit_threads,
    "chatkit items": chatkit_items,
    "input items": input_items,
    "assistants": assistants,
}


def check_cursors(client: TestClient, headers: dict[str, str], path: str, ids: list[str]) -> None:
    def page(**params: Any) -> tuple[list[str], dict[str, Any]]:
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, (params, response.text)
        body: dict[str, Any] = response.json()
        data = [item["id"] for item in body["data"]]
        assert body["object"] == "list"
        assert (body["first_id"], body["last_id"]) == (
            (data[0], data[-1]) if data else (None, None)
        )
        return data, body

    assert len(ids) == N and ids == sorted(ids)
    assert page(order="asc", limit=100)[0] == ids
    for order in ("asc", "desc"):
        ordered = ids if order == "asc" else ids[::-1]
        # Forward with `after`, as the SDKs auto-paginate.
        seen: list[str] = []
        params: dict[str, Any] = {"order": order, "limit": 7}
        while True:
            data, body = page(**params)
            seen += data
            if not body["has_more"]:
                break
            params["after"] = body["last_id"]
        assert seen == ordered, order
        # Backward with `before`, from the end of the list to its start.
        seen = [ordered[-1]]
        params = {"order": order, "limit": 7, "before": ordered[-1]}
        while True:
            data, body = page(**params)
            seen = data + seen
            if not body["has_more"]:
                break
            params["before"] = body["first_id"]
        assert seen == ordered, order
        # The five just before the 10th item; the three before the 4th (no more beyond them).
        data, body = page(order=order, limit=5, before=ordered[9])
        assert (data, body["has_more"]) == (ordered[4:9], True)
        data, body = page(order=order, limit=5, before=ordered[3])
        assert (data, body["has_more"]) == (ordered[:3], False)
        # Both cursors: the window between them, from `after` on.
        data, body = page(order=order, limit=3, after=ordered[2], before=ordered[10])
        assert (data, body["has_more"]) == (ordered[3:6], True)
        data, body = page(order=order, limit=10, after=ordered[2], before=ordered[10])
        assert (data, body["has_more"]) == (ordered[3:10], False)
        data, body = page(order=order, after=ordered[-1])
        assert (data, body["has_more"]) == ([], False)


@pytest.mark.parametrize("kind", list(LISTS))
def test_cursors_in_both_orders(client: TestClient, db: Database, kind: str) -> None:
    tenant = make_tenant(db, f"cursors-{kind}")
    grant(db, tenant, 100_000_000)
    path, ids = LISTS[kind](client, tenant)
    check_cursors(client, tenant.headers, path, ids)


def test_sdk_pages_forward_and_back(client: TestClient, db: Database) -> None:
    tenant = make_tenant(db, "sdk-cursors")
    sdk = openai.OpenAI(
        base_url="http://testserver/v1", api_key=tenant.api_key, http_client=client, max_retries=0
    )
    path, ids = conversation_items(client, tenant)
    conversation_id = path.split("/")[3]
    assert [
        i.id for i in sdk.conversations.items.list(conversation_id, order="asc", limit=4)
    ] == ids
    assert [i.id for i in sdk.conversations.items.list(conversation_id, limit=6)] == ids[::-1]
    after = sdk.conversations.items.list(conversation_id, order="asc", after=ids[9], limit=5)
    assert ([i.id for i in after.data], after.has_more) == (ids[10:15], True)

    thread_path, message_ids = thread_messages(client, tenant)
    thread_id = thread_path.split("/")[3]
    previous = sdk.beta.threads.messages.list(
        thread_id, order="asc", before=message_ids[9], limit=5
    )
    assert [m.id for m in previous.data] == message_ids[4:9]
    assert previous.has_more is True
    # Auto-pagination keeps `before` and pages on with `after`: the window ends at the cursor.
    assert [m.id for m in previous] == message_ids[4:9]
