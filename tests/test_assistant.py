"""The Samsar assistant routes and the Responses API on both engines, with the real local model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.providers.settings import ProviderSettings
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import PNG_1X1, FakeUpstream
from tests.support.recording import RecordingChat, record_chat
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

FUNDS = 100_000_000  # 100 credits


@pytest.fixture(scope="module")
def fake_images() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture
def app(settings: Settings, db: Database, fake_images: FakeUpstream) -> FastAPI:
    images = ProviderSettings(provider="openai", base_url=fake_images.base_url, model="gpt-image-1")
    return create_app(settings.model_copy(update={"images": images}))


@pytest.fixture
def recorder(app: FastAPI) -> RecordingChat:
    return record_chat(app)


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, FUNDS)
    return tenant


def new_session(client: TestClient, tenant: Tenant) -> str:
    response = client.post("/v1/assistant/session", json={}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


def complete(client: TestClient, tenant: Tenant, **body: Any) -> httpx.Response:
    body.setdefault("max_output_tokens", 12)
    return client.post("/v1/assistant/completion", json=body, headers=tenant.headers)


def balance(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        return Ledger(session).balance(Owner.account(tenant.account_id))


def ledger_kinds(db: Database, tenant: Tenant) -> list[str]:
    with db.session(write=False) as session:
        entries = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
    return [e.kind for e in reversed(entries)]


def test_session_prompt_and_completion(client: TestClient, funded: Tenant, db: Database) -> None:
    created = client.post(
        "/v1/assistant/session",
        json={"session_name": "launch", "metadata": {"team": "a"}},
        headers=funded.headers,
    ).json()
    assert created["session_id"].startswith("sess_")
    assert (created["session_type"], created["session_name"]) == ("assistant", "launch")
    assert created["metadata"] == {"team": "a"}
    prompt = client.post(
        "/v1/assistant/set_system_prompt",
        json={"systemPrompt": "You are the launch assistant."},
        headers=funded.headers,
    ).json()
    assert prompt == {
        "system_prompt": "You are the launch assistant.",
        "model": "smollm2-135m-instruct",
        "selected_assistant_model": "smollm2-135m-instruct",
    }
    response = complete(client, funded, session_id=created["session_id"], input="Hello!")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "response"
    assert body["id"].startswith("resp_")
    assert body["status"] in ("completed", "incomplete")
    assert body["output"][0]["type"] == "message"
    assert body["output_text"] == body["output"][0]["content"][0]["text"]
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    )
    charged = float(response.headers["x-credits-charged"])
    assert charged > 0
    assert float(response.headers["x-credits-remaining"]) == pytest.approx(100 - charged)
    assert balance(db, funded) == FUNDS - round(charged * 1_000_000)


def test_every_input_form_reaches_the_model(
    client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    session_id = new_session(client, funded)
    forms: list[tuple[str, Any]] = [
        ("message", "plain string"),
        ("input", {"role": "user", "content": "one message"}),
        ("messages", [{"role": "user", "content": [{"type": "input_text", "text": "a list"}]}]),
        ("input", [{"type": "input_text", "text": "a content array"}]),
        (
            "input",
            {"type": "message", "role": "user", "content": [{"type": "text", "text": "typed"}]},
        ),
    ]
    for alias, value in forms:
        response = complete(client, funded, sessionId=session_id, **{alias: value})
        assert response.status_code == 200, (alias, response.text)
    seen = [r.messages[-1].text for r in recorder.requests]
    assert seen == ["plain string", "one message", "a list", "a content array", "typed"]
    # Without input, the model answers from the session's history.
    assert complete(client, funded, id=session_id).status_code == 200
    assert recorder.requests[-1].messages[-1].role == "assistant"


def test_chain_continuity_by_what_reaches_the_model(
    client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    session_id = new_session(client, funded)
    first = complete(client, funded, session_id=session_id, input="My name is Ada.").json()
    second = complete(client, funded, session_id=session_id, input="What is my name?").json()
    assert second["previous_response_id"] == first["id"]
    turn_two = [(m.role, m.text) for m in recorder.requests[1].messages]
    assert turn_two[0][0] == "system"
    assert ("user", "My name is Ada.") in turn_two
    assert ("assistant", first["output_text"]) in turn_two
    assert turn_two[-1] == ("user", "What is my name?")


def test_system_prompt_resolution(
    client: TestClient, funded: Tenant, recorder: RecordingChat
) -> None:
    session_id = new_session(client, funded)
    complete(client, funded, session_id=session_id, input="hi")
    assert "helpful assistant" in recorder.requests[-1].messages[0].text  # the default
    client.post(
        "/v1/assistant/set_system_prompt",
        json={"system_prompt": "Be a pirate."},
        headers=funded.headers,
    )
    complete(client, funded, session_id=session_id, input="hi")
    assert recorder.requests[-1].messages[0].text == "Be a pirate."
    for cleared in (None, ""):
        answer = client.post(
            "/v1/assistant/set_system_prompt",
            json={"system_prompt": cleared},
            headers=funded.headers,
        ).json()
        assert answer["system_prompt"] is None
    complete(client, funded, session_id=session_id, input="hi")
    assert "helpful assistant" in recorder.requests[-1].messages[0].text


def test_errors_and_none_of_them_charges(client: TestClient, funded: Tenant, db: Database) -> None:
    before = (balance(db, funded), ledger_kinds(db, funded))
    session_id = new_session(client, funded)
    other = make_tenant(db, "tenant-b")
    grant(db, other, FUNDS)
    foreign = new_session(client, other)
    assert_error(complete(client, funded, input="x"), 400)  # no session_id
    assert_error(complete(client, funded, session_id=12345, input="x"), 400)
    assert_error(complete(client, funded, session_id="bad id!", input="x"), 400)
    assert_error(
        complete(client, funded, session_id=session_id, input={"role": "robot", "content": "x"}),
        400,
    )
    assert_error(
        complete(client, funded, session_id=session_id, input=[{"type": "input_file"}]), 400
    )
    assert_error(complete(client, funded, session_id=session_id), 400)  # no input, no history
    assert_error(
        complete(client, funded, session_id=session_id, input="x", max_output_tokens=0), 400
    )
    response = client.post(
        "/v1/assistant/completion", json={"session_id": session_id, "input": "x"}
    )
    assert_error(response, 401)
    assert_error(complete(client, funded, session_id=foreign, input="x"), 403)
    assert_error(
        complete(client, funded, session_id="sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ", input="x"), 404
    )
    assert_error(client.get("/v1/responses/resp_missing", headers=funded.headers), 404)
    image_in = [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": "https://example.com/a.png"},
    ]
    error = assert_error(complete(client, funded, session_id=session_id, input=image_in), 400)
    assert error["code"] == "images_not_supported"
    assert (balance(db, funded), ledger_kinds(db, funded)) == before
    broke = make_tenant(db, "tenant-broke")
    broke_session = new_session(client, broke)
    refused = complete(client, broke, session_id=broke_session, input="hello")
    assert_error(refused, 402)
    assert refused.headers["x-credits-remaining"] == "0"
    assert ledger_kinds(db, broke) == []


def test_image_generation_then_an_edit_of_the_latest_image(
    client: TestClient, funded: Tenant, fake_images: FakeUpstream, db: Database
) -> None:
    session_id = new_session(client, funded)
    tools = [{"type": "image_generation", "size": "1024x1024", "quality": "low"}]
    made = complete(
        client,
        funded,
        session_id=session_id,
        input="A launch poster.",
        tools=tools,
        tool_choice={"type": "image_generation"},
    )
    assert made.status_code == 200, made.text
    item = made.json()["output"][0]
    assert item["type"] == "image_generation_call"
    assert item["result"] == PNG_1X1
    assert item["revised_prompt"] == "revised: A launch poster."
    assert float(made.headers["x-credits-charged"]) >= 0.011 * 100 * 2.5  # priced per image
    calls_before = len(fake_images.calls)
    edited = complete(
        client,
        funded,
        session_id=session_id,
        input="Make the background blue.",
        tools=[{"type": "image_generation"}],
        tool_choice="required",
    )
    assert edited.status_code == 200, edited.text
    edit_call = fake_images.calls[calls_before]
    assert edit_call["route"] == "edit"
    assert edit_call["prompt"] == "Make the background blue."
    assert edit_call["image_bytes"] > 50  # the session's latest image went up as the edit input


def test_no_images_provider_is_a_400_and_charges_nothing(
    settings: Settings, db: Database, funded: Tenant
) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        session_id = new_session(client, funded)
        response = complete(
            client,
            funded,
            session_id=session_id,
            input="draw",
            tools=[{"type": "image_generation"}],
            tool_choice={"type": "image_generation"},
        )
    assert "SESSIONARY_IMAGES__PROVIDER" in assert_error(response, 400)["message"]
    assert balance(db, funded) == FUNDS


def test_enhance(client: TestClient, funded: Tenant, db: Database) -> None:
    response = client.post(
        "/v1/chat/enhance",
        json={"message": "we sell good shoes", "maxwords": 12, "language": "en"},
        headers=funded.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["content"].strip()
    assert len(response.json()["content"].split()) <= 12
    assert response.headers["x-credits-charged"] == "20"
    assert balance(db, funded) == FUNDS - 20_000_000
    for bad in (
        {"message": ""},
        {"message": "   "},
        {},
        {"message": 3},
        {"message": "x", "language": "zz-unknown-1"},
    ):
        assert_error(client.post("/v1/chat/enhance", json=bad, headers=funded.headers), 400)
    assert balance(db, funded) == FUNDS - 20_000_000


def test_previous_response_id_continues_from_that_response_and_no_other(
    client: TestClient, funded: Tenant, recorder: RecordingChat, db: Database
) -> None:
    """A branch: a turn from the first response of a chain reads the history up to that
    response, without the turns after it, nor any other session's; an unknown or malformed
    id is a 404 / 400 naming `previous_response_id`. On SQLite the history is read through the
    session's index, never by a scan back through every message stored since, everyone's."""

    def turn(text: str, **more: Any) -> dict[str, Any]:
        answer = client.post("/v1/responses", json={"input": text, **more}, headers=funded.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    first = turn("One")
    turn("Two", previous_response_id=first["id"])
    turn("Elsewhere")  # another session's messages, written after the first
    branch = turn("Branch", previous_response_id=first["id"])
    assert branch["conversation"]["id"] == first["conversation"]["id"]
    said = [(m.role, m.text) for m in recorder.requests[-1].messages]
    assert ("user", "One") in said and ("user", "Branch") in said
    assert ("user", "Two") not in said and ("user", "Elsewhere") not in said
    assert said.index(("user", "One")) < said.index(("user", "Branch"))
    for bad, status in (("resp_" + "0" * 26, 404), ("not an id", 400)):
        refused = client.post(
            "/v1/responses",
            json={"input": "x", "previous_response_id": bad},
            headers=funded.headers,
        )
        assert assert_error(refused, status)["param"] == "previous_response_id"
    if db.dialect == "sqlite":
        from sessionary.conversations.store import _TRANSCRIPT_THROUGH
        from sessionary.kit.raw_sql import plan_of

        with db.session(write=False) as session:
            connection = session.connection()
            sql = plan_of(_TRANSCRIPT_THROUGH, connection.dialect, {}).sql
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            steps = cursor.execute(f"EXPLAIN QUERY PLAN {sql}", ("s", "s", "r")).fetchall()
        assert steps and not [s for s in steps if "SCAN" in s[-1]], steps


def test_responses_api_basics(client: TestClient, funded: Tenant, recorder: RecordingChat) -> None:
    first = client.post(
        "/v1/responses",
        json={"input": "Hi", "max_output_tokens": 8, "instructions": "Be brief."},
        headers=funded.headers,
    ).json()
    assert recorder.requests[-1].messages[0].text == "Be brief."
    conversation = first["conversation"]["id"]
    follow = client.post(
        "/v1/responses",
        json={"input": "Again", "previous_response_id": first["id"], "max_output_tokens": 8},
        headers=funded.headers,
    ).json()
    assert follow["conversation"]["id"] == conversation
    assert ("user", "Hi") in [(m.role, m.text) for m in recorder.requests[-1].messages]
    both = client.post(
        "/v1/responses",
        json={"input": "x", "conversation": conversation, "previous_response_id": first["id"]},
        headers=funded.headers,
    )
    assert_error(both, 400)
    short = client.post(
        "/v1/responses",
        json={"input": "Write a long story.", "max_output_tokens": 3},
        headers=funded.headers,
    ).json()
    assert short["status"] == "incomplete"
    assert short["incomplete_details"] == {"reason": "max_output_tokens"}
    huge = client.post(
        "/v1/responses",
        json={"input": "word " * 9000, "truncation": "disabled"},
        headers=funded.headers,
    )
    assert assert_error(huge, 400)["code"] == "context_length_exceeded"


def test_truncation_auto_drops_the_oldest_turns(
    settings: Settings, db: Database, funded: Tenant
) -> None:
    from sessionary.providers.llm.local import LlamaCppChat

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        recorder = record_chat(client.app, context_window=400)  # type: ignore[arg-type]
        assert isinstance(recorder.inner, LlamaCppChat)
        session_id = new_session(client, funded)
        for i in range(6):
            turn = complete(
                client,
                funded,
                session_id=session_id,
                input=f"Fact {i}: " + "blah " * 40,
                max_output_tokens=8,
            )
            assert turn.status_code == 200, turn.text
        texts = [m.text for m in recorder.requests[-1].messages]
    assert not any(t.startswith("Fact 0") for t in texts)  # dropped
    assert texts[-1].startswith("Fact 5")


def test_json_schema_output_is_valid_json(client: TestClient, funded: Tenant) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }
    body = {
        "input": "Name a city as JSON.",
        "max_output_tokens": 60,
        "text": {"format": {"type": "json_schema", "name": "city", "schema": schema}},
    }
    answer = client.post("/v1/responses", json=body, headers=funded.headers).json()
    assert isinstance(json.loads(answer["output_text"])["city"], str)


def test_streaming_lifecycle_and_billing(client: TestClient, funded: Tenant, db: Database) -> None:
    session_id = new_session(client, funded)
    with client.stream(
        "POST",
        "/v1/assistant/completion",
        headers=funded.headers,
        json={
            "session_id": session_id,
            "input": "Count to five.",
            "max_output_tokens": 16,
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert float(response.headers["x-credits-reserved"]) > 0
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    kinds = [e["type"] for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert final["output_text"] == deltas
    assert balance(db, funded) == FUNDS - round(final["credits"]["charged"] * 1_000_000)
    stored = client.get(f"/v1/responses/{final['id']}", headers=funded.headers).json()
    assert stored["output_text"] == deltas


def test_streaming_an_image_turn(client: TestClient, funded: Tenant) -> None:
    session_id = new_session(client, funded)
    body = {
        "session_id": session_id,
        "input": "A red fox.",
        "stream": True,
        "tools": [{"type": "image_generation", "partial_images": 1}],
        "tool_choice": "required",
    }
    with client.stream(
        "POST", "/v1/assistant/completion", json=body, headers=funded.headers
    ) as response:
        events = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["result"] == PNG_1X1


def test_another_accounts_responses_are_forbidden(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    mine = client.post(
        "/v1/responses", json={"input": "hi", "max_output_tokens": 4}, headers=funded.headers
    ).json()
    other = make_tenant(db, "tenant-b")
    grant(db, other, FUNDS)
    for method, path in [
        ("GET", f"/v1/responses/{mine['id']}"),
        ("DELETE", f"/v1/responses/{mine['id']}"),
        ("GET", f"/v1/responses/{mine['id']}/input_items"),
    ]:
        assert_error(client.request(method, path, headers=other.headers), 403)
    follow = client.post(
        "/v1/responses",
        json={"input": "x", "previous_response_id": mine["id"]},
        headers=other.headers,
    )
    assert_error(follow, 403)
    conversation = client.post(
        "/v1/responses",
        json={"input": "x", "conversation": mine["conversation"]["id"]},
        headers=other.headers,
    )
    assert_error(conversation, 403)
    assert client.get(f"/v1/responses/{mine['id']}", headers=funded.headers).status_code == 200


def test_a_responses_capable_upstream_decides_on_images(
    settings: Settings, db: Database, funded: Tenant, fake_images: FakeUpstream
) -> None:
    fake_images.responses_mode = "image"
    try:
        llm = ProviderSettings(
            provider="openai",
            base_url=fake_images.base_url,
            model="gpt-test",
            api="responses",
            api_key="sk-upstream",
        )
        with TestClient(
            create_app(settings.model_copy(update={"llm": llm})), raise_server_exceptions=False
        ) as client:
            session_id = new_session(client, funded)
            answer = complete(
                client,
                funded,
                session_id=session_id,
                input="Draw me a fox if you like.",
                tools=[{"type": "image_generation", "size": "1024x1024"}],
            )
    finally:
        fake_images.responses_mode = "missing"
    assert answer.status_code == 200, answer.text
    call = next(c for c in reversed(fake_images.calls) if c["route"] == "responses")
    assert call["authorization"] == "Bearer sk-upstream"  # the provider's key, as a bearer token
    sent = call["body"]
    assert sent["tools"] == [{"type": "image_generation", "size": "1024x1024"}]  # passed through
    output = answer.json()["output"]
    assert [item["type"] for item in output] == ["image_generation_call", "message"]
    assert output[0]["result"] == PNG_1X1
    assert answer.json()["output_text"] == "Here is your fox."
    # gpt-test is priced at the fallback; the image adds its per-image price (auto), x 2.5.
    assert float(answer.headers["x-credits-charged"]) >= 0.042 * 100 * 2.5
