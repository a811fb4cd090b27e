"""Threads, messages, assistant profiles and ChatKit through the real openai SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.config import Settings
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.support.live import LiveServer
from tests.support.recording import RecordingChat, record_chat
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow


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


def secret_client(client: TestClient, secret: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0
    )


def test_threads_lifecycle(sdk: openai.OpenAI) -> None:
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": "hello"}], metadata={"topic": "a"}
    )
    assert thread.object == "thread"
    assert thread.metadata == {"topic": "a"}
    assert sdk.beta.threads.retrieve(thread.id).id == thread.id
    updated = sdk.beta.threads.update(thread.id, metadata={"topic": "b"})
    assert updated.metadata == {"topic": "b"}
    first = list(sdk.beta.threads.messages.list(thread.id))
    assert [m.content[0].text.value for m in first] == ["hello"]  # type: ignore[union-attr]
    deleted = sdk.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (thread.id, True, "thread.deleted")
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.retrieve(thread.id)


def test_messages_crud_and_metadata_limits(sdk: openai.OpenAI) -> None:
    thread = sdk.beta.threads.create()
    message = sdk.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        ],
        metadata={"k": "v"},
    )
    assert message.object == "thread.message"
    assert (message.role, message.status, message.thread_id) == ("user", "completed", thread.id)
    assert message.content[0].text.value == "look"  # type: ignore[union-attr]
    assert message.content[1].image_url.url == "https://example.com/x.png"  # type: ignore[union-attr]
    assert message.completed_at is not None and message.incomplete_at is None
    assert sdk.beta.threads.messages.retrieve(message.id, thread_id=thread.id).id == message.id
    updated = sdk.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"k": "w"})
    assert updated.metadata == {"k": "w"}
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.messages.update(
            message.id, thread_id=thread.id, metadata={f"k{i}": "v" for i in range(17)}
        )
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.messages.create(
            thread.id, role="user", content="x", metadata={"k" * 65: "v"}
        )
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.messages.create(
            thread.id, role="user", content="x", metadata={"k": "v" * 513}
        )
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.messages.create(thread.id, role="system", content="x")  # type: ignore[arg-type]
    gone = sdk.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert (gone.deleted, gone.object) == (True, "thread.message.deleted")
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.messages.retrieve(message.id, thread_id=thread.id)


def test_auto_pagination_over_250_messages(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant
) -> None:
    thread = sdk.beta.threads.create()
    for i in range(250):
        response = client.post(
            f"/v1/threads/{thread.id}/messages",
            json={"role": "user", "content": f"m{i}"},
            headers=funded.headers,
        )
        assert response.status_code == 200
    ids_asc = [m.id for m in sdk.beta.threads.messages.list(thread.id, order="asc", limit=37)]
    texts_asc = [
        m.content[0].text.value
        for m in sdk.beta.threads.messages.list(thread.id, order="asc", limit=100)
    ]  # type: ignore[union-attr]
    assert texts_asc == [f"m{i}" for i in range(250)]
    ids_desc = [
        m.id for m in sdk.beta.threads.messages.list(thread.id, limit=23)
    ]  # default order: desc
    assert len(ids_asc) == 250
    assert ids_desc == list(reversed(ids_asc))
    page = sdk.beta.threads.messages.list(thread.id, order="asc", limit=20)
    assert page.has_more is True
    assert len(page.data) == 20
    after = [
        m.id
        for m in sdk.beta.threads.messages.list(thread.id, order="asc", after=ids_asc[99], limit=50)
    ]
    assert after == ids_asc[100:]
    before = [
        m.id
        for m in sdk.beta.threads.messages.list(
            thread.id, order="asc", before=ids_asc[60], limit=25
        )
    ]
    assert before == ids_asc[35:60]  # the previous page: the 25 just before the cursor
    before_desc = [
        m.id
        for m in sdk.beta.threads.messages.list(
            thread.id, order="desc", before=ids_asc[200], limit=10
        )
    ]
    assert before_desc == list(reversed(ids_asc[201:211]))
    assert_error(
        client.get(f"/v1/threads/{thread.id}/messages?limit=101", headers=funded.headers), 400
    )
    assert_error(
        client.get(f"/v1/threads/{thread.id}/messages?limit=0", headers=funded.headers), 400
    )
    assert_error(
        client.get(f"/v1/threads/{thread.id}/messages?order=up", headers=funded.headers), 400
    )


def test_turns_show_up_as_messages_and_messages_become_history(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    thread = sdk.beta.threads.create()
    turn = client.post(
        "/v1/assistant/completion",
        json={"session_id": thread.id, "input": "Hi there", "max_output_tokens": 8},
        headers=funded.headers,
    )
    assert turn.status_code == 200, turn.text
    listed = list(sdk.beta.threads.messages.list(thread.id, order="asc"))
    assert [m.role for m in listed] == ["user", "assistant"]
    assert listed[1].content[0].text.value == turn.json()["output_text"]  # type: ignore[union-attr]
    sdk.beta.threads.messages.create(thread.id, role="user", content="My favourite colour is teal.")
    client.post(
        "/v1/responses",
        json={
            "conversation": thread.id,
            "input": "What is my favourite colour?",
            "max_output_tokens": 8,
        },
        headers=funded.headers,
    )
    seen = [(m.role, m.text) for m in recorder.requests[-1].messages]
    assert ("user", "My favourite colour is teal.") in seen
    assert seen[-1] == ("user", "What is my favourite colour?")


def test_threads_of_another_account_are_forbidden(
    sdk: openai.OpenAI, client: TestClient, db: Database
) -> None:
    thread = sdk.beta.threads.create()
    other = make_tenant(db, "tenant-b")
    for method, path in [
        ("GET", f"/v1/threads/{thread.id}"),
        ("POST", f"/v1/threads/{thread.id}"),
        ("DELETE", f"/v1/threads/{thread.id}"),
        ("GET", f"/v1/threads/{thread.id}/messages"),
    ]:
        assert_error(
            client.request(
                method, path, json={} if method == "POST" else None, headers=other.headers
            ),
            403,
        )
    response = client.post(
        f"/v1/threads/{thread.id}/messages",
        json={"role": "user", "content": "x"},
        headers=other.headers,
    )
    assert_error(response, 403)


def test_assistant_profiles(sdk: openai.OpenAI) -> None:
    created = sdk.beta.assistants.create(
        model="smollm2-135m-instruct",
        name="Helper",
        instructions="Help {{name}}.",
        temperature=0.5,
        metadata={"team": "x"},
    )
    assert created.object == "assistant"
    assert (created.name, created.instructions, created.temperature) == (
        "Helper",
        "Help {{name}}.",
        0.5,
    )
    assert sdk.beta.assistants.retrieve(created.id).name == "Helper"
    assert sdk.beta.assistants.update(created.id, name="Renamed").name == "Renamed"
    assert created.id in [a.id for a in sdk.beta.assistants.list()]
    assert sdk.beta.assistants.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.beta.assistants.retrieve(created.id)


def test_chatkit_sessions_and_client_secrets(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, recorder: RecordingChat, db: Database
) -> None:
    profile = sdk.beta.assistants.create(
        model="smollm2-135m-instruct", instructions="You help {{customer}} with orders."
    )
    chat = sdk.beta.chatkit.sessions.create(
        user="user-42",
        workflow={"id": profile.id, "state_variables": {"customer": "Ada"}},
        expires_after={"anchor": "created_at", "seconds": 300},
        rate_limits={"max_requests_per_1_minute": 50},
    )
    assert chat.object == "chatkit.session"
    assert (chat.status, chat.user, chat.workflow.id) == ("active", "user-42", profile.id)
    assert chat.client_secret.startswith("ek_")
    assert chat.rate_limits.max_requests_per_1_minute == 50
    assert chat.expires_at - time.time() == pytest.approx(300, abs=5)
    with pytest.raises(openai.NotFoundError, match="Workflow 'asst_nope' not found"):
        sdk.beta.chatkit.sessions.create(user="u", workflow={"id": "asst_nope"})
    default = sdk.beta.chatkit.sessions.create(user="user-7", workflow={"id": "default"})
    assert (default.rate_limits.max_requests_per_1_minute, default.status) == (10, "active")

    secret_headers = {"Authorization": f"Bearer {chat.client_secret}"}
    turn = client.post(
        "/v1/assistant/completion",
        json={"session_id": chat.id, "input": "Where is my parcel?", "max_output_tokens": 8},
        headers=secret_headers,
    )
    assert turn.status_code == 200, turn.text
    assert (
        recorder.requests[-1].messages[0].text == "You help Ada with orders."
    )  # state variables filled
    by_responses = client.post(
        "/v1/responses",
        json={"conversation": chat.id, "input": "Thanks", "max_output_tokens": 8},
        headers=secret_headers,
    )
    assert by_responses.status_code == 200, by_responses.text
    # The turns bill the account that created the session.
    assert float(turn.headers["x-credits-remaining"]) < 100

    secret_sdk = secret_client(client, chat.client_secret)
    items = list(secret_sdk.beta.chatkit.threads.list_items(chat.id, order="asc"))
    assert [i.type for i in items] == ["chatkit.user_message", "chatkit.assistant_message"] * 2
    assert items[0].content[0].text == "Where is my parcel?"  # type: ignore[union-attr]
    assert secret_sdk.beta.chatkit.threads.retrieve(chat.id).user == "user-42"

    # Only its own session, only turns and reads.
    other_session = client.post("/v1/assistant/session", json={}, headers=funded.headers).json()[
        "session_id"
    ]
    assert_error(
        client.post(
            "/v1/assistant/completion",
            json={"session_id": other_session, "input": "x"},
            headers=secret_headers,
        ),
        403,
    )
    assert_error(
        client.post("/v1/responses", json={"input": "new conversation"}, headers=secret_headers),
        403,
    )
    assert_error(client.get("/v1/credits", headers=secret_headers), 403)
    assert_error(client.post("/v1/threads", json={}, headers=secret_headers), 403)
    assert_error(client.get(f"/v1/chatkit/threads/{default.id}", headers=secret_headers), 403)

    cancelled = sdk.beta.chatkit.sessions.cancel(chat.id)
    assert cancelled.status == "cancelled"
    assert chat.client_secret not in cancelled.client_secret  # never shown again
    assert_error(client.get(f"/v1/chatkit/threads/{chat.id}", headers=secret_headers), 401)


def test_client_secret_expiry(sdk: openai.OpenAI, client: TestClient) -> None:
    chat = sdk.beta.chatkit.sessions.create(
        user="u", workflow={"id": "default"}, expires_after={"anchor": "created_at", "seconds": 1}
    )
    headers = {"Authorization": f"Bearer {chat.client_secret}"}
    assert client.get(f"/v1/chatkit/threads/{chat.id}", headers=headers).status_code == 200
    time.sleep(1.2)
    assert_error(
        client.get(f"/v1/chatkit/threads/{chat.id}", headers=headers), 401, "client_secret_expired"
    )
    with pytest.raises(openai.BadRequestError):
        sdk.beta.chatkit.sessions.create(
            user="u",
            workflow={"id": "default"},
            expires_after={"anchor": "created_at", "seconds": 601},
        )


def test_chatkit_threads_list_retrieve_delete(sdk: openai.OpenAI) -> None:
    a = sdk.beta.chatkit.sessions.create(user="alice", workflow={"id": "default"})
    b = sdk.beta.chatkit.sessions.create(user="bob", workflow={"id": "default"})
    listed = [t.id for t in sdk.beta.chatkit.threads.list()]
    assert listed[:2] == [b.id, a.id]
    assert [t.id for t in sdk.beta.chatkit.threads.list(user="alice")] == [a.id]
    thread = sdk.beta.chatkit.threads.retrieve(a.id)
    assert (thread.object, thread.user, thread.status.type) == ("chatkit.thread", "alice", "active")
    gone = sdk.beta.chatkit.threads.delete(a.id)
    assert (gone.deleted, gone.object) == (True, "chatkit.thread.deleted")
    assert [t.id for t in sdk.beta.chatkit.threads.list()] == [b.id]


def test_openai_beta_header_is_accepted_not_required(client: TestClient, funded: Tenant) -> None:
    for beta in ({}, {"OpenAI-Beta": "assistants=v2"}, {"OpenAI-Beta": "chatkit_beta=v1"}):
        assert (
            client.post("/v1/threads", json={}, headers={**funded.headers, **beta}).status_code
            == 200
        )


def test_rate_limit_is_exact_across_processes(
    settings_env: dict[str, str], db: Database, funded: Tenant
) -> None:
    limit = 5
    server = LiveServer(settings_env, workers=4)
    try:
        created = httpx.post(
            f"{server.base_url}/v1/chatkit/sessions",
            headers=funded.headers,
            json={
                "user": "u",
                "workflow": {"id": "default"},
                "rate_limits": {"max_requests_per_1_minute": limit},
            },
        )
        assert created.status_code == 200, created.text
        chat = created.json()
        headers = {"Authorization": f"Bearer {chat['client_secret']}"}

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                return await asyncio.gather(
                    *(
                        http.get(f"/v1/chatkit/threads/{chat['id']}", headers=headers)
                        for _ in range(8 * limit)
                    )
                )

        responses = asyncio.run(fire())
    finally:
        server.stop()
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit
    assert statuses.count(429) == 7 * limit
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["type"] == "rate_limit_error"


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    from sessionary.app import create_app

    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_every_list_route_validates_its_page_parameters(
    client: TestClient, funded: Tenant, sdk: openai.OpenAI
) -> None:
    thread = sdk.beta.threads.create()
    response_id = client.post(
        "/v1/responses", json={"input": "hi", "max_output_tokens": 4}, headers=funded.headers
    ).json()["id"]
    chat = sdk.beta.chatkit.sessions.create(user="u", workflow={"id": "default"})
    routes = [
        f"/v1/threads/{thread.id}/messages",
        "/v1/assistants",
        "/v1/chatkit/threads",
        f"/v1/chatkit/threads/{chat.id}/items",
        f"/v1/responses/{response_id}/input_items",
    ]
    for route in routes:
        assert (
            client.get(f"{route}?limit=100&order=asc", headers=funded.headers).status_code == 200
        ), route
        for bad in ("limit=0", "limit=101", "limit=x", "order=sideways"):
            error = assert_error(client.get(f"{route}?{bad}", headers=funded.headers), 400)
            assert error["param"] == bad.split("=")[0], route


def test_client_secret_reaches_the_threads_of_its_own_user(
    sdk: openai.OpenAI, client: TestClient, funded: Tenant, db: Database
) -> None:
    """The seed: `user` "ensures this Session can access other objects that have the same
    `user` scope": the threads of that user in the same account, nothing else."""
    first = sdk.beta.chatkit.sessions.create(user="alice", workflow={"id": "default"})
    second = sdk.beta.chatkit.sessions.create(
        user="alice", workflow={"id": "default"}, rate_limits={"max_requests_per_1_minute": 100}
    )
    bob = sdk.beta.chatkit.sessions.create(user="bob", workflow={"id": "default"})
    other = make_tenant(db, "tenant-b")
    grant(db, other, 1_000_000)
    elsewhere = openai.OpenAI(
        base_url="http://testserver/v1", api_key=other.api_key, http_client=client, max_retries=0
    ).beta.chatkit.sessions.create(user="alice", workflow={"id": "default"})
    sdk.conversations.items.create(second.id, items=[{"role": "user", "content": "earlier"}])

    alice = secret_client(client, second.client_secret)
    headers = {"Authorization": f"Bearer {second.client_secret}"}
    assert [t.id for t in alice.beta.chatkit.threads.list()] == [second.id, first.id]
    assert [t.id for t in alice.beta.chatkit.threads.list(user="alice", limit=1)] == [
        second.id,
        first.id,
    ]
    assert alice.beta.chatkit.threads.retrieve(first.id).user == "alice"
    assert list(alice.beta.chatkit.threads.list_items(first.id)) == []
    # It may continue them: a turn on the user's other thread, through both turn routes.
    for route, key in (
        ("/v1/responses", "conversation"),
        ("/v1/assistant/completion", "session_id"),
    ):
        turn = client.post(
            route, json={key: first.id, "input": "Hi", "max_output_tokens": 2}, headers=headers
        )
        assert turn.status_code == 200, turn.text
    assert len(list(alice.beta.chatkit.threads.list_items(first.id))) == 4

    for thread in (bob.id, elsewhere.id):
        assert_error(client.get(f"/v1/chatkit/threads/{thread}", headers=headers), 403)
        assert_error(client.get(f"/v1/chatkit/threads/{thread}/items", headers=headers), 403)
        assert_error(
            client.post(
                "/v1/responses", json={"conversation": thread, "input": "x"}, headers=headers
            ),
            403,
        )
    assert_error(client.get("/v1/chatkit/threads?user=bob", headers=headers), 403)
    # Nothing else: no deleting, no other faces.
    assert_error(client.delete(f"/v1/chatkit/threads/{first.id}", headers=headers), 403)
    assert_error(client.get(f"/v1/conversations/{first.id}/items", headers=headers), 403)
    assert_error(client.get(f"/v1/threads/{first.id}/messages", headers=headers), 403)
    # An external user lists no ChatKit threads (they are the account's).
    user = client.post(
        "/v1/external_users/session",
        json={"external_user": {"provider": "shop", "unique_key": "u1"}},
        headers=funded.headers,
    ).json()
    assert_error(
        client.get(
            "/v1/chatkit/threads",
            headers={"Authorization": f"Bearer {user['external_api_key']}"},
        ),
        403,
    )
