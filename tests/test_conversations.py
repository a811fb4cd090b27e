"""The Conversations API through the real openai SDK: one session store, seen through every face."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from sessionary.kit.errors import UpstreamError
from sessionary.providers.base import ChatRequest, ChatResult
from tests.conftest import Tenant, make_tenant
from tests.support.live import LiveServer
from tests.support.recording import RecordingChat, record_chat
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, 100_000_000)
    return tenant


@pytest.fixture
def recorder(app: FastAPI) -> RecordingChat:
    return record_chat(app)


@pytest.fixture
def sdk(client: TestClient, funded: Tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=funded.api_key, http_client=client, max_retries=0
    )


EVERY_KIND: list[Any] = [
    {"role": "system", "content": "Answer in French."},
    {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": PIXEL, "detail": "low"},
        ],
    },
    {
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "A pixel.", "annotations": []},
            {"type": "refusal", "refusal": "No more than that."},
        ],
    },
    {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q": 1}'},
    {"type": "function_call_output", "call_id": "call_1", "output": '{"answer": 42}'},
    {
        "type": "image_generation_call",
        "id": "ig_given",
        "status": "completed",
        "result": PIXEL.split(",")[1],
    },
]


def test_conversation_lifecycle_with_every_item_kind(sdk: openai.OpenAI) -> None:
    conversation = sdk.conversations.create(items=EVERY_KIND, metadata={"topic": "pixels"})
    assert (conversation.object, conversation.metadata) == ("conversation", {"topic": "pixels"})
    assert sdk.conversations.retrieve(conversation.id).id == conversation.id

    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == [
        "message",
        "message",
        "message",
        "message",
        "function_call",
        "function_call_output",
        "image_generation_call",
    ]
    system, developer, user, assistant, call, output, image = items
    assert (system.role, system.content[0].type, system.content[0].text) == (  # type: ignore[union-attr]
        "system",
        "input_text",
        "Answer in French.",
    )
    assert developer.role == "developer"  # type: ignore[union-attr]
    assert user.content[1].type == "input_image"  # type: ignore[union-attr]
    assert (user.content[1].image_url, user.content[1].detail) == (PIXEL, "low")  # type: ignore[union-attr]
    assert [c.type for c in assistant.content] == ["output_text", "refusal"]  # type: ignore[union-attr]
    assert (call.call_id, call.name, call.arguments) == ("call_1", "lookup", '{"q": 1}')  # type: ignore[union-attr]
    assert (output.call_id, output.output) == ("call_1", '{"answer": 42}')  # type: ignore[union-attr]
    assert (image.status, image.result) == ("completed", PIXEL.split(",")[1])  # type: ignore[union-attr]
    # Items are named by their stored ids (not the ids a client sent), ascending in time.
    assert image.id != "ig_given"
    assert [i.id for i in items] == sorted(i.id for i in items)

    added = sdk.conversations.items.create(
        conversation.id, items=[{"role": "user", "content": "And now?"}]
    )
    assert added.object == "list" and added.has_more is False
    assert added.first_id == added.last_id == added.data[0].id
    got = sdk.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert got.content[0].text == "And now?"  # type: ignore[union-attr]
    newest = next(iter(sdk.conversations.items.list(conversation.id, limit=1)))
    assert newest.id == added.data[0].id  # default order: newest first

    updated = sdk.conversations.update(conversation.id, metadata={"topic": "dots"})
    assert updated.metadata == {"topic": "dots"}
    after_delete = sdk.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert (after_delete.object, after_delete.id) == ("conversation", conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert len(list(sdk.conversations.items.list(conversation.id))) == 7

    gone = sdk.conversations.delete(conversation.id)
    assert (gone.id, gone.deleted, gone.object) == (conversation.id, True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.retrieve(conversation.id)  # one session: gone from every face


def test_empty_conversation_and_include(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant
) -> None:
    conversation = sdk.conversations.create()
    assert conversation.metadata == {}
    page = sdk.conversations.items.list(conversation.id, include=["message.input_image.image_url"])
    assert (page.data, page.has_more) == ([], False)
    error = assert_error(
        client.get(
            f"/v1/conversations/{conversation.id}/items?include=message.output_text.logprobs",
            headers=funded.headers,
        ),
        400,
    )
    assert error["param"] == "include"
    assert_error(
        client.get(
            f"/v1/conversations/{conversation.id}/items?include=everything", headers=funded.headers
        ),
        400,
    )


BAD_ITEMS: list[tuple[Any, str]] = [
    ([{"role": "user", "content": "x"}] * 21, "items"),
    ("not a list", "items"),
    ([{"role": "user", "content": "x"}, {"role": "robot", "content": "x"}], "items[1].role"),
    ([{"type": "reasoning", "summary": []}], "items[0].type"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "items[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "items[0].content[0].image_url"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], "items[0].content[0].type"),
    ([{"role": "user", "content": []}], "items[0].content"),
    ([{"role": "user", "content": [{"type": "input_text"}]}], "items[0].content[0].text"),
    ([{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}], "items[0].call_id"),
    ([{"type": "function_call", "call_id": "c", "name": "f"}], "items[0].arguments"),
    ([{"type": "function_call_output", "call_id": "c", "output": 5}], "items[0].output"),
    ([{"type": "image_generation_call", "status": "lost", "result": None}], "items[0].status"),
    (["just a string"], "items[0]"),
]  # fmt: skip


@pytest.mark.parametrize(("items", "param"), BAD_ITEMS, ids=[p for _, p in BAD_ITEMS])
def test_bad_items_are_400s_naming_them_and_store_nothing(
    client: TestClient, funded: Tenant, items: Any, param: str
) -> None:
    for_create = assert_error(
        client.post("/v1/conversations", json={"items": items}, headers=funded.headers), 400
    )
    assert for_create["param"] == param
    conversation = client.post("/v1/conversations", json={}, headers=funded.headers).json()
    for_add = assert_error(
        client.post(
            f"/v1/conversations/{conversation['id']}/items",
            json={"items": items},
            headers=funded.headers,
        ),
        400,
    )
    assert for_add["param"] == param
    sessions = client.get("/v1/sessions", headers=funded.headers).json()["data"]
    assert [s["id"] for s in sessions] == [conversation["id"]]  # the failed create made none
    listed = client.get(f"/v1/conversations/{conversation['id']}/items", headers=funded.headers)
    assert listed.json()["data"] == []


def test_metadata_limits(sdk: openai.OpenAI, client: TestClient, funded: Tenant) -> None:
    for metadata in (
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
    ):
        with pytest.raises(openai.BadRequestError):
            sdk.conversations.create(metadata=metadata)  # type: ignore[arg-type]
    conversation = sdk.conversations.create(metadata={f"k{i}": "v" * 512 for i in range(16)})
    with pytest.raises(openai.BadRequestError):
        sdk.conversations.update(conversation.id, metadata={"k" * 65: "v"})
    assert sdk.conversations.update(conversation.id, metadata=None).metadata == {}
    assert_error(
        client.post(
            f"/v1/conversations/{conversation.id}",
            json={"metadata": {}, "x": 1},
            headers=funded.headers,
        ),
        400,
    )


def test_other_owners_conversations_are_not_found(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, db: Database
) -> None:
    mine = sdk.conversations.create(items=[{"role": "user", "content": "secret"}])
    item_id = next(iter(sdk.conversations.items.list(mine.id))).id
    other = make_tenant(db, "tenant-b")
    user = client.post(
        "/v1/external_users/session",
        json={"external_user": {"provider": "shop", "unique_key": "u1"}},
        headers=funded.headers,
    ).json()
    user_headers = {"Authorization": f"Bearer {user['external_api_key']}"}
    calls = [
        ("GET", f"/v1/conversations/{mine.id}", None),
        ("POST", f"/v1/conversations/{mine.id}", {"metadata": {"a": "b"}}),
        ("DELETE", f"/v1/conversations/{mine.id}", None),
        ("GET", f"/v1/conversations/{mine.id}/items", None),
        (
            "POST",
            f"/v1/conversations/{mine.id}/items",
            {"items": [{"role": "user", "content": "x"}]},
        ),
        ("GET", f"/v1/conversations/{mine.id}/items/{item_id}", None),
        ("DELETE", f"/v1/conversations/{mine.id}/items/{item_id}", None),
    ]
    for headers in (other.headers, user_headers):
        for method, path, body in calls:
            error = assert_error(client.request(method, path, json=body, headers=headers), 404)
            assert "secret" not in json.dumps(error)
    # The external user's own conversation is its own, and its account manages it.
    theirs = client.post("/v1/conversations", json={}, headers=user_headers).json()
    assert client.get(f"/v1/conversations/{theirs['id']}", headers=user_headers).status_code == 200
    assert (
        client.get(f"/v1/conversations/{theirs['id']}", headers=funded.headers).status_code == 200
    )
    assert len(list(sdk.conversations.items.list(mine.id))) == 1  # untouched


def test_responses_with_a_conversation_prepend_and_append_once(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    conversation = sdk.conversations.create(
        items=[{"role": "user", "content": "My favourite colour is teal."}]
    )
    body = {"conversation": conversation.id, "input": "What is my colour?", "max_output_tokens": 4}
    headers = {**funded.headers, "Idempotency-Key": "turn-1"}
    first = client.post("/v1/responses", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["conversation"] == {"id": conversation.id}
    seen = [(m.role, m.text) for m in recorder.requests[-1].messages]
    assert seen[1:] == [("user", "My favourite colour is teal."), ("user", "What is my colour?")]
    retried = client.post("/v1/responses", json=body, headers=headers)
    assert retried.json()["id"] == first.json()["id"]
    assert len(recorder.requests) == 1  # replayed, not run again
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [(i.role, i.type) for i in items] == [  # type: ignore[union-attr]
        ("user", "message"),
        ("user", "message"),
        ("assistant", "message"),
    ]
    assert items[2].content[0].text == first.json()["output_text"]  # type: ignore[union-attr]
    # The object form of `conversation`, as the SDK's `{"id": ...}` param sends it.
    second = sdk.responses.create(
        conversation={"id": conversation.id}, input="Thanks.", max_output_tokens=4
    )
    assert second.conversation is not None and second.conversation.id == conversation.id
    assert len(list(sdk.conversations.items.list(conversation.id))) == 5
    unstored = sdk.responses.create(
        conversation=conversation.id, input="Off the record.", max_output_tokens=2, store=False
    )
    assert unstored.conversation is not None
    assert len(list(sdk.conversations.items.list(conversation.id))) == 5

    async def broken(request: ChatRequest) -> ChatResult:
        raise UpstreamError("The model provider failed (simulated).")

    recorder.generate = broken  # type: ignore[method-assign]
    failed = client.post("/v1/responses", json={**body, "input": "Again?"}, headers=funded.headers)
    assert_error(failed, 502)
    assert "x-credits-charged" not in failed.headers
    assert len(list(sdk.conversations.items.list(conversation.id))) == 5  # an error adds nothing
    assert_error(
        client.post(
            "/v1/responses",
            json={**body, "previous_response_id": first.json()["id"]},
            headers=funded.headers,
        ),
        400,
    )


def test_one_session_through_every_face(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant
) -> None:
    """A ChatKit session, given items through the Conversations API, continued through
    `/assistant/completion` and `/responses`, reads the same through every face."""
    chat = sdk.beta.chatkit.sessions.create(user="ada", workflow={"id": "default"})
    sdk.conversations.items.create(chat.id, items=[{"role": "user", "content": "I am Ada."}])
    turn = client.post(
        "/v1/assistant/completion",
        json={"session_id": chat.id, "input": "Hello", "max_output_tokens": 4},
        headers=funded.headers,
    )
    assert turn.status_code == 200, turn.text
    sdk.responses.create(conversation=chat.id, input="Bye", max_output_tokens=4)
    sdk.beta.threads.messages.create(chat.id, role="user", content="From the thread.")

    items = list(sdk.conversations.items.list(chat.id, order="asc"))
    messages = list(sdk.beta.threads.messages.list(chat.id, order="asc"))
    chatkit = list(sdk.beta.chatkit.threads.list_items(chat.id, order="asc"))
    ids = [i.id for i in items]
    assert len(ids) == 6
    assert [m.id for m in messages] == ids == [c.id for c in chatkit]
    assert [i.role for i in items] == ["user", "user", "assistant", "user", "assistant", "user"]  # type: ignore[union-attr]
    texts = ["I am Ada.", "Hello", None, "Bye", None, "From the thread."]
    for text, item, message in zip(texts, items, messages, strict=True):
        if text is not None:
            assert item.content[0].text == text  # type: ignore[union-attr]
            assert message.content[0].text.value == text  # type: ignore[union-attr]
    assert items[2].content[0].text == turn.json()["output_text"]  # type: ignore[union-attr]
    sdk.beta.chatkit.threads.delete(chat.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(chat.id)


def test_the_sdk_against_a_live_server(settings_env: dict[str, str], funded: Tenant) -> None:
    server = LiveServer(settings_env)
    try:
        sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=funded.api_key)
        conversation = sdk.conversations.create(
            items=[{"role": "user", "content": "My name is Ada."}], metadata={"app": "live"}
        )
        added = sdk.conversations.items.create(
            conversation.id,
            items=[
                {"type": "function_call", "call_id": "c1", "name": "now", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "noon"},
            ],
        )
        assert [i.type for i in added.data] == ["function_call", "function_call_output"]
        response = sdk.responses.create(
            conversation=conversation.id, input="Who am I?", max_output_tokens=4
        )
        assert response.conversation is not None and response.conversation.id == conversation.id
        items = list(sdk.conversations.items.list(conversation.id, order="asc", limit=2))
        assert [i.type for i in items] == ["message", "function_call", "function_call_output"] + [
            "message"
        ] * 2
        assert items[-1].content[0].text == response.output_text  # type: ignore[union-attr]
        one = sdk.conversations.items.retrieve(items[0].id, conversation_id=conversation.id)
        assert one.content[0].text == "My name is Ada."  # type: ignore[union-attr]
        sdk.conversations.items.delete(items[0].id, conversation_id=conversation.id)
        assert sdk.conversations.update(conversation.id, metadata={"app": "x"}).metadata == {
            "app": "x"
        }
        assert len(list(sdk.conversations.items.list(conversation.id))) == 4
        assert sdk.conversations.delete(conversation.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            sdk.conversations.items.list(conversation.id)
    finally:
        server.stop()


def test_function_items_are_the_call_history_of_every_face(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    """Calls and outputs added as conversation items are the call history a turn reads, in the
    shape the Responses API stores them; a turn's own calls and outputs are conversation items."""
    chat = sdk.beta.chatkit.sessions.create(user="ada", workflow={"id": "default"})
    sdk.conversations.items.create(
        chat.id,
        items=[
            {"role": "user", "content": "What time is it?"},
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "c1",
                "name": "now",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "c1", "output": "noon"},
        ],
    )
    sdk.responses.create(conversation=chat.id, input="So?", max_output_tokens=2)
    seen = recorder.requests[-1].messages
    assert [(m.role, m.call_id, [c.call_id for c in m.calls]) for m in seen[1:4]] == [
        ("user", None, []),
        ("assistant", None, ["c1"]),
        ("tool", "c1", []),
    ]
    assert seen[3].text == "noon"

    # A turn that answers a call (made in the conversation) through /responses.
    sdk.conversations.items.create(
        chat.id,
        items=[{"type": "function_call", "call_id": "c2", "name": "now", "arguments": "{}"}],
    )
    answered = sdk.responses.create(
        conversation=chat.id,
        input=[{"type": "function_call_output", "call_id": "c2", "output": "one o'clock"}],
        max_output_tokens=2,
    )
    inputs = list(sdk.responses.input_items.list(answered.id))
    assert [(i.type, i.call_id) for i in inputs] == [("function_call_output", "c2")]  # type: ignore[union-attr]
    items = list(sdk.conversations.items.list(chat.id, order="asc"))
    kinds = [i.type for i in items]
    assert kinds[:3] == ["message", "function_call", "function_call_output"]
    assert kinds[5:8] == ["function_call", "function_call_output", "message"]
    assert items[6].id == inputs[0].id and items[6].output == "one o'clock"  # type: ignore[union-attr]
    tool_calls = [
        i
        for i in sdk.beta.chatkit.threads.list_items(chat.id, order="asc", limit=100)
        if i.type == "chatkit.client_tool_call"
    ]
    assert [(c.call_id, c.output) for c in tool_calls] == [("c1", "noon"), ("c2", "one o'clock")]  # type: ignore[union-attr]
    assert_error(
        client.post(
            "/v1/responses",
            json={
                "conversation": chat.id,
                "input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}],
            },
            headers=funded.headers,
        ),
        400,
        "unknown_call_id",
    )
