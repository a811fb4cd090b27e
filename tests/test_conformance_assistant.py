"""Real clients against a real server process: samsar-js (through node) and the openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import (
    ResponseCreatedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from tests.support.fake_upstream import PNG_1X1, FakeUpstream
from tests.support.live import LiveServer, run_cli
from tests.support.samsar import samsar

pytestmark = pytest.mark.slow


@dataclass
class Running:
    server: LiveServer
    key: str
    images: FakeUpstream

    @property
    def v1(self) -> str:
        return f"{self.server.base_url}/v1"

    def new_session(self) -> str:
        response = httpx.post(
            f"{self.v1}/assistant/session", json={}, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["session_id"])


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    images = FakeUpstream()
    env = {
        "SESSIONARY_DATA_DIR": str(tmp_path_factory.mktemp("conformance") / "data"),
        "SESSIONARY_IMAGES__PROVIDER": "openai",
        "SESSIONARY_IMAGES__BASE_URL": images.base_url,
        "SESSIONARY_IMAGES__MODEL": "gpt-image-1",
        "SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS": "24",
    }
    output = run_cli(["init"], env)
    key = next(line for line in output.splitlines() if line.startswith("sk_sy_"))
    server = LiveServer(env)
    try:
        yield Running(server, key, images)
    finally:
        server.stop()
        images.stop()


# samsar-js


def test_samsar_set_prompt_completion_forms_and_enhance(running: Running) -> None:
    session_id = running.new_session()
    calls = [
        ("setAssistantSystemPrompt", [{"system_prompt": "You are the launch assistant."}]),
        ("createAssistantCompletion", [{"session_id": session_id, "input": "A caption, please."}]),
        ("createAssistantCompletion", [{"sessionId": session_id, "message": "Shorter."}]),
        ("createAssistantCompletion", [{"id": session_id, "messages": [
            {"role": "user", "content": [{"type": "input_text", "text": "In French?"}]}]}]),
        ("createAssistantCompletion", [{"session_id": session_id, "input": [
            {"type": "input_text", "text": "A content array."}]}]),
        ("createAssistantCompletion", [{"session_id": session_id, "input": {
            "role": "user", "content": "One message object."}}]),
        ("createAssistantCompletion", [{"session_id": session_id}]),
        ("enhanceMessage", [{"message": "we sell good shoes", "language": "en", "maxwords": 10}]),
        ("createAssistantCompletion", [{"session_id": "sess_01ZZZZZZZZZZZZZZZZZZZZZZZZ", "input": "x"}]),
        ("setAssistantSystemPrompt", [{"system_prompt": None}]),
    ]  # fmt: skip
    results = samsar(running.v1, running.key, calls)
    prompt, *turns, enhanced, missing, cleared = results
    assert prompt["ok"] and prompt["data"]["system_prompt"] == "You are the launch assistant."
    for turn in turns:
        assert turn["ok"], turn
        assert turn["data"]["object"] == "response"
        assert turn["data"]["output"][0]["type"] == "message"
        assert turn["creditsCharged"] > 0
        assert turn["creditsRemaining"] < 1000
    ids = [t["data"]["id"] for t in turns]
    assert [t["data"]["previous_response_id"] for t in turns[1:]] == ids[:-1]  # one chain
    assert enhanced["ok"] and enhanced["data"]["content"]
    assert enhanced["creditsCharged"] == 20
    assert (missing["ok"], missing["status"]) == (False, 404)
    assert "No session" in missing["message"]
    assert cleared["ok"] and cleared["data"]["system_prompt"] is None


def test_samsar_image_generation_and_follow_up_edit(running: Running) -> None:
    session_id = running.new_session()
    tool = {"type": "image_generation", "size": "1024x1024", "quality": "high"}
    calls = [
        ("createAssistantCompletion", [{"session_id": session_id, "input": "A launch poster.",
                                        "tools": [tool], "tool_choice": {"type": "image_generation"}}]),
        ("createAssistantCompletion", [{"session_id": session_id, "input": "Make the background blue.",
                                        "tools": [tool], "tool_choice": {"type": "image_generation"}}]),
    ]  # fmt: skip
    made, edited = samsar(running.v1, running.key, calls)
    assert made["ok"], made
    item = made["data"]["output"][0]
    assert (item["type"], item["status"], item["result"]) == (
        "image_generation_call",
        "completed",
        PNG_1X1,
    )
    assert item["revised_prompt"] == "revised: A launch poster."
    assert edited["ok"], edited
    assert edited["data"]["previous_response_id"] == made["data"]["id"]
    edit_calls = [c for c in running.images.calls if c["route"] == "edit"]
    assert edit_calls[-1]["prompt"] == "Make the background blue."
    assert edit_calls[-1]["image_bytes"] > 50


# openai SDK


@pytest.fixture(scope="module")
def sdk(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.v1, api_key=running.key, max_retries=0)


def test_openai_responses_create_chain_and_conversation(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(input="Hello there.", max_output_tokens=12)
    assert first.object == "response"
    assert first.output_text
    assert first.usage is not None and first.usage.output_tokens > 0
    second = sdk.responses.create(
        input="Once more.", previous_response_id=first.id, max_output_tokens=12
    )
    assert second.previous_response_id == first.id
    assert second.conversation is not None and first.conversation is not None
    assert second.conversation.id == first.conversation.id
    third = sdk.responses.create(
        input="In the same conversation.", conversation=first.conversation.id, max_output_tokens=12
    )
    assert third.previous_response_id == second.id
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(
            input="x", conversation=first.conversation.id, previous_response_id=first.id
        )


def test_openai_json_schema_output(sdk: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"type": "string", "maxLength": 20},
            "bright": {"type": "boolean"},
        },
        "required": ["colour", "bright"],
        "additionalProperties": False,
    }
    answer = sdk.responses.create(
        input="Pick a colour and say if it is bright.",
        max_output_tokens=60,
        text={
            "format": {"type": "json_schema", "name": "colour", "schema": schema, "strict": True}
        },
    )
    data = json.loads(answer.output_text)
    assert isinstance(data["colour"], str)
    assert isinstance(data["bright"], bool)


def test_openai_retrieve_input_items_delete(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(input="Remember the number 7.", max_output_tokens=8)
    second = sdk.responses.create(
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Which number?"}]}],
        previous_response_id=first.id,
        max_output_tokens=8,
    )
    fetched = sdk.responses.retrieve(second.id)
    assert fetched.id == second.id
    assert fetched.output_text == second.output_text
    items = list(sdk.responses.input_items.list(second.id))
    assert len(items) == 1
    assert items[0].type == "message"
    assert items[0].content[0].text == "Which number?"  # type: ignore[union-attr]
    sdk.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(second.id)


def test_openai_streaming_with_the_sdks_event_types(sdk: openai.OpenAI) -> None:
    stream = sdk.responses.create(input="Say something short.", max_output_tokens=12, stream=True)
    events = list(stream)
    assert isinstance(events[0], ResponseCreatedEvent)
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert deltas
    done = next(e for e in events if isinstance(e, ResponseTextDoneEvent))
    assert done.text == "".join(deltas)
    assert any(isinstance(e, ResponseOutputItemDoneEvent) for e in events)
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_openai_stream_helper_collects_the_final_response(sdk: openai.OpenAI) -> None:
    # The helper wants `response.completed`: an answer cut at its cap ends `incomplete`, so the
    # prompt asks for a short answer and the cap leaves it room.
    with sdk.responses.stream(
        model="smollm2-135m-instruct", input="Name one fruit, in one word.", max_output_tokens=32
    ) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "".join(texts)
    assert final.id.startswith("resp_")
    assert sdk.responses.retrieve(final.id).output_text == final.output_text


def test_openai_models_list(sdk: openai.OpenAI) -> None:
    assert "smollm2-135m-instruct" in [m.id for m in sdk.models.list()]


def test_a_client_that_hangs_up_stops_generation_and_pays_for_what_was_produced(
    running: Running,
) -> None:
    from sessionary.billing.ledger import Ledger
    from sessionary.config import Settings
    from sessionary.kit.db import Database

    body = {
        "input": "Count slowly from one to one thousand.",
        "max_output_tokens": 2000,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {running.key}"}
    with httpx.stream(
        "POST", f"{running.v1}/responses", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        reserved = float(response.headers["x-credits-reserved"])
        deltas = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and '"response.output_text.delta"' in line:
                deltas += 1
                if deltas == 5:
                    break  # hang up mid-answer
    data_dir = Path(running.server.log_path).parent
    db = Database(Settings(data_dir=data_dir))
    try:
        deadline = time.monotonic() + 20
        while True:
            with db.session(write=False) as session:
                ledger = Ledger(session)
                open_holds = ledger.store.count_open_reservations()
                entries = ledger.store.entries("account", _account_of(db), limit=5)
            if open_holds == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        db.dispose()
    assert open_holds == 0
    charge = next(e for e in entries if e.kind == "charge")
    assert json.loads(charge.usage or "{}") == {"cancelled": True}
    # Billed for a handful of tokens, far from the 2000 it had reserved: generation stopped.
    assert 0 < charge.amount_micro * -1 < reserved * 1_000_000 / 20


def _account_of(db: Any) -> str:
    from sessionary.accounts.service import AccountService

    with db.session(write=False) as session:
        return AccountService(session).store.list_accounts()[0].id
