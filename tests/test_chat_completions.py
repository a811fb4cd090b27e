"""`POST /v1/chat/completions` through the real openai SDK, on both engines, with the bundled
model: answers, streams, JSON modes, what reaches the model, what is refused, and what it costs."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from sessionary.providers.base import FunctionTool, ToolChoice
from tests.conftest import Tenant
from tests.support.recording import RecordingChat, record_chat
from tests.test_credentials_and_replay import chatkit_session
from tests.test_credits_http import grant
from tests.test_external_users import ALICE, new_user

pytestmark = pytest.mark.slow

FUNDS = 100_000_000  # 100 credits
HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, FUNDS)
    return tenant


@pytest.fixture
def sdk(client: TestClient, funded: Tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=funded.api_key, http_client=client, max_retries=0
    )


@pytest.fixture
def recorder(app: FastAPI) -> RecordingChat:
    return record_chat(app)


def ledger_state(db: Database, tenant: Tenant) -> tuple[int, list[int], int]:
    """(balance, charges, open holds) of the tenant's account."""
    with db.session(write=False) as session:
        ledger = Ledger(session)
        rows = ledger.store.entries("account", tenant.account_id, limit=1000)
        charges = [-r.amount_micro for r in rows if r.kind == "charge"]
        balance = ledger.balance(Owner.account(tenant.account_id))
        assert balance == ledger.ledger_sum(Owner.account(tenant.account_id))
        return balance, charges, ledger.store.count_open_reservations()


def micro(credits: str | float) -> int:
    return round(float(credits) * 1_000_000)


def test_create_answers_in_openais_shape_and_charges_what_the_headers_say(
    sdk: openai.OpenAI, db: Database, funded: Tenant
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=HELLO, max_tokens=12
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl")
    assert completion.model == "smollm2-135m-instruct"
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage is not None and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    charged = micro(raw.headers["x-credits-charged"])
    balance, charges, holds = ledger_state(db, funded)
    assert charged > 0 and charges == [charged] and holds == 0
    assert balance == FUNDS - charged == micro(raw.headers["x-credits-remaining"])
    assert getattr(completion, "session_id", None) is None  # not stored by default


def test_stream_with_usage_ends_with_done_and_carries_the_charge(
    sdk: openai.OpenAI, client: TestClient, db: Database, funded: Tenant
) -> None:
    stream = sdk.chat.completions.create(
        messages=HELLO,
        model="smollm2-135m-instruct",
        max_completion_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].usage is None
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 0 < last.usage.completion_tokens <= 10
    assert len({c.id for c in chunks}) == 1
    credits = (last.model_extra or {})["credits"]
    _, charges, holds = ledger_state(db, funded)
    assert charges == [micro(credits["charged"])] and holds == 0
    # The raw stream: the hold announced up front, `data: [DONE]` last.
    body = {"messages": HELLO, "max_tokens": 4, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=funded.headers) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert micro(raw.headers["x-credits-reserved"]) > 0
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][len("data: ") :])
    assert final["choices"][0]["finish_reason"] and "usage" not in final  # not asked for
    assert final["credits"]["charged"] > 0


class Verdict(BaseModel):
    positive: bool


def test_parse_with_a_pydantic_model_gets_an_instance(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        response_format=Verdict,
        max_tokens=24,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Verdict)


def test_parameters_reach_the_model_as_given(sdk: openai.OpenAI, recorder: RecordingChat) -> None:
    sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "developer", "content": "Be terse."}, *HELLO],
        max_completion_tokens=5,
        temperature=0.3,
        top_p=0.5,
        stop=["\n\n", "END"],
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format={"type": "json_object"},
        user="end-user-1",
    )
    sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=HELLO,
        max_tokens=3,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {}}},
        },
    )
    first, second = recorder.requests
    # The client's own developer message is the prompt: no server prompt is added before it.
    assert [m.role for m in first.messages] == ["developer", "user"]
    assert (first.max_output_tokens, first.temperature, first.top_p) == (5, 0.3, 0.5)
    assert (first.stop, first.seed) == (("\n\n", "END"), 7)
    assert (first.presence_penalty, first.frequency_penalty) == (0.5, -0.5)
    assert first.json_schema == {} and first.functions == ()
    # Without one, the prompt an assistant turn would use goes first.
    assert [m.role for m in second.messages] == ["system", "user"]
    assert second.functions == (
        FunctionTool(
            "get_weather",
            WEATHER["function"]["parameters"],  # type: ignore[index]
            "The weather in a city.",
        ),
    )
    assert second.tool_choice == ToolChoice("required", ("get_weather",))
    assert second.parallel_tool_calls is False
    assert second.json_schema == {"type": "object", "properties": {}}


def test_history_with_tool_calls_reaches_the_model_paired(
    sdk: openai.OpenAI, recorder: RecordingChat
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "You report weather."}]},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "call_1", "content": "Snow, -3 C."},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=4,
    )
    (request,) = recorder.requests
    system, _, assistant, tool = request.messages
    assert (system.role, system.text) == ("system", "You report weather.")
    assert assistant.role == "assistant" and assistant.text == ""
    assert [(c.call_id, c.name, c.arguments) for c in assistant.calls] == [
        ("call_1", "get_weather", '{"city": "Oslo"}')
    ]
    assert (tool.role, tool.call_id, tool.text) == ("tool", "call_1", "Snow, -3 C.")
    assert request.tool_choice == ToolChoice("none")


BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "messages"),
    ({"messages": HELLO, "n": 2}, "n"),
    ({"messages": HELLO, "logprobs": True}, "logprobs"),
    ({"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": HELLO, "model": "gpt-9"}, "model"),
    ({"messages": HELLO, "unknown_knob": 1}, "unknown_knob"),
    ({"messages": HELLO, "audio": {"voice": "alloy"}}, "audio"),
    ({"messages": HELLO, "functions": [{"name": "f"}]}, "functions"),
    ({"messages": HELLO, "logit_bias": {"50256": -100}}, "logit_bias"),
    ({"messages": HELLO, "reasoning_effort": "high"}, "reasoning_effort"),
    ({"messages": HELLO, "modalities": ["text", "audio"]}, "modalities"),
    ({"messages": HELLO, "max_tokens": 5, "max_completion_tokens": 5}, "max_tokens"),
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"messages": HELLO, "temperature": 3}, "temperature"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": HELLO, "metadata": {"k": "v"}}, "metadata"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
    (
        {"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].type",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        "messages[0].content[0].type",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "out"}]},
        "messages[1].tool_call_id",
    ),
    (
        {"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "out"}]},
        "messages[0].tool_call_id",
    ),
    ({"messages": HELLO, "tools": [{"type": "web_search"}]}, "tools[0].type"),
    (
        {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "a b"}}]},
        "tools[0].function.name",
    ),
    (
        {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
        "tools[0].function.parameters",
    ),
    (
        {"messages": HELLO, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        "tool_choice.function.name",
    ),
    ({"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ({"messages": HELLO, "response_format": {"type": "yaml"}}, "response_format.type"),
    (
        {"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {}}},
        "response_format.json_schema.name",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
        "messages",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_requests_are_a_400_naming_the_field_and_cost_nothing(
    client: TestClient, db: Database, funded: Tenant, body: dict[str, Any], param: str
) -> None:
    answer = client.post("/v1/chat/completions", json=body, headers=funded.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error" and error["message"]
    assert ledger_state(db, funded) == (FUNDS, [], 0)


def test_sdk_raises_the_400_as_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="smollm2-135m-instruct", messages=HELLO, n=3)
    assert caught.value.param == "n"


def test_store_true_keeps_the_conversation_on_a_new_session(
    client: TestClient, sdk: openai.OpenAI
) -> None:
    completion = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=6,
        store=True,
        metadata={"topic": "greeting"},
    )
    session_id = (completion.model_extra or {})["session_id"]
    thread = sdk.beta.threads.retrieve(session_id)
    assert thread.metadata == {"topic": "greeting"}
    messages = sdk.beta.threads.messages.list(session_id, order="asc").data
    texts = [(m.role, m.content[0].text.value) for m in messages]  # type: ignore[union-attr]
    assert texts[1:] == [
        ("user", "Say hello."),
        ("assistant", completion.choices[0].message.content),
    ]


def test_a_client_secret_runs_its_workflow_and_may_not_override_it(
    client: TestClient, db: Database, funded: Tenant
) -> None:
    secret = chatkit_session(client, funded)["client_secret"]
    headers = {"Authorization": f"Bearer {secret}"}
    answer = client.post(
        "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    _, charges, _ = ledger_state(db, funded)
    assert charges == [micro(answer.headers["x-credits-charged"])]  # billed to its account
    for extra, param in (
        ({"messages": [{"role": "system", "content": "Obey me."}, *HELLO]}, "messages"),
        ({"messages": [{"role": "developer", "content": "Obey me."}, *HELLO]}, "messages"),
        ({"messages": HELLO, "store": True}, "store"),
    ):
        refused = client.post("/v1/chat/completions", json=extra, headers=headers)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == (param, "client_secret_cannot_override")
    assert len(ledger_state(db, funded)[1]) == 1


def test_no_credits_is_a_402_and_nothing_runs(
    client: TestClient, tenant: Tenant, recorder: RecordingChat
) -> None:
    answer = client.post("/v1/chat/completions", json={"messages": HELLO}, headers=tenant.headers)
    assert answer.status_code == 402, answer.text
    assert recorder.requests == []


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_an_idempotency_key_replays_the_answer_and_charges_once(
    client: TestClient, db: Database, funded: Tenant, streamed: bool
) -> None:
    body = {"messages": HELLO, "max_tokens": 6, "stream": streamed}
    headers = {**funded.headers, "Idempotency-Key": f"chat-{streamed}"}
    first = client.post("/v1/chat/completions", json=body, headers=headers)
    again = client.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    _, charges, holds = ledger_state(db, funded)
    assert len(charges) == 1 and holds == 0


def test_an_external_users_key_is_billed_to_that_user_and_gets_its_prompt(
    client: TestClient, db: Database, funded: Tenant, recorder: RecordingChat
) -> None:
    made = new_user(client, funded, ALICE, credits=5)
    headers = {"Authorization": f"Bearer {made['external_api_key']}"}
    prompt = {"external_user": ALICE, "system_prompt": "You sell shoes."}
    set_prompt = "/v1/external_users/assistant/set_system_prompt"
    assert client.post(set_prompt, json=prompt, headers=funded.headers).status_code == 200
    answer = client.post(
        "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    charged = micro(answer.headers["x-credits-charged"])
    assert charged > 0 and micro(answer.headers["x-credits-remaining"]) == 5_000_000 - charged
    # The account paid only the grant it gave.
    assert ledger_state(db, funded)[0] == FUNDS - 5_000_000
    (request,) = recorder.requests
    assert (request.messages[0].role, request.messages[0].text) == ("system", "You sell shoes.")
