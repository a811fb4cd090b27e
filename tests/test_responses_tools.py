"""Complete Responses objects and function tools, checked with the openai SDK's own types.

The shapes are checked strictly (tests/support/openai_shapes.py) on every path: create, retrieve,
stream events, function calls and failures. The model's answers that carry function calls are
scripted in-process (tests/support/scripted_chat.py) so the server's side is tested on its own.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.providers.base import FunctionCall
from tests.conftest import Tenant
from tests.support.openai_shapes import strict_events, strict_response
from tests.support.scripted_chat import ScriptedChat, script_chat
from tests.test_assistant import FUNDS, balance, new_session
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}
PARIS = FunctionCall("call_paris", "get_weather", '{"city": "Paris"}')
TOKYO = FunctionCall("call_tokyo", "get_weather", '{"city": "Tokyo"}')


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, FUNDS)
    return tenant


@pytest.fixture
def scripted(app: FastAPI) -> ScriptedChat:
    return script_chat(app)


def sdk(client: TestClient, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=tenant.api_key, http_client=client, max_retries=0
    )


def post(client: TestClient, tenant: Tenant, **body: Any) -> httpx.Response:
    body.setdefault("max_output_tokens", 16)
    return client.post("/v1/responses", json=body, headers=tenant.headers)


def stream_events(
    client: TestClient, tenant: Tenant, path: str = "/v1/responses", **body: Any
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    body.setdefault("max_output_tokens", 16)
    with client.stream("POST", path, json={**body, "stream": True}, headers=tenant.headers) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    return r, events


def test_every_path_answers_complete_response_objects(client: TestClient, funded: Tenant) -> None:
    """The real local model: create, retrieve, stream, incomplete, and every parameter echoed."""
    params = {
        "input": "Say hello.",
        "temperature": 0.5,
        "top_p": 0.9,
        "presence_penalty": 0.25,
        "frequency_penalty": 0.5,
        "top_logprobs": 0,
        "max_tool_calls": 3,
        "parallel_tool_calls": False,
        "safety_identifier": "user-hash-1",
        "prompt_cache_key": "greeting",
        "service_tier": "auto",
        "user": "u-1",
        "metadata": {"team": "a"},
        "include": ["reasoning.encrypted_content"],
        "tools": [WEATHER],
        "tool_choice": "none",
        "reasoning": {"effort": "low"},
    }
    created = post(client, funded, **params)
    assert created.status_code == 200, created.text
    body = created.json()
    response = strict_response(body)
    assert body["presence_penalty"] == 0.25 and body["frequency_penalty"] == 0.5
    assert (response.temperature, response.top_p, response.top_logprobs) == (0.5, 0.9, 0)
    assert (response.max_tool_calls, response.parallel_tool_calls) == (3, False)
    assert (response.safety_identifier, response.prompt_cache_key) == ("user-hash-1", "greeting")
    assert (response.service_tier, response.user, response.metadata) == (
        "default",
        "u-1",
        body["metadata"],
    )
    assert response.tool_choice == "none"
    assert [t.model_dump(exclude_none=True) for t in response.tools] == [WEATHER]
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 0
    assert [item.type for item in response.output] == ["message"]  # "none": no call

    stored = client.get(f"/v1/responses/{body['id']}", headers=funded.headers).json()
    assert stored == body
    strict_response(stored)

    short = post(client, funded, input="Count to fifty.", max_output_tokens=1).json()
    assert strict_response(short).incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]

    answer, events = stream_events(client, funded, input="Say hi.")
    assert answer.status_code == 200
    typed = strict_events(events)
    assert typed[-1].type in ("response.completed", "response.incomplete")
    strict_response(events[-1]["response"])

    session_id = new_session(client, funded)
    samsar = client.post(
        "/v1/assistant/completion",
        json={"sessionId": session_id, "message": "hi", "maxOutputTokens": 4, "clientTag": "x"},
        headers=funded.headers,
    )
    assert samsar.status_code == 200, samsar.text  # Samsar's own extra fields are ignored
    assert strict_response(samsar.json()).max_output_tokens == 4  # its camelCase alias honoured
    assert samsar.json()["truncation"] == "auto"  # this route's default, echoed as used


def test_parameters_that_cannot_be_honoured_are_400s_and_free(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    before = balance(db, funded)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"top_logprobs": 5}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),  # unknown on /responses: named
        ({"frobnicate": True}, "frobnicate"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tools": [{**WEATHER, "name": "get weather!"}]}, "tools[0].name"),
        ({"tools": [{**WEATHER, "name": "x" * 65}]}, "tools[0].name"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": 3}}]},
         "tools[0].parameters"),
        ({"tools": [{**WEATHER, "parameters": {"type": "string"}}]}, "tools[0].parameters"),
        ({"tools": [{**WEATHER, "colour": "red"}]}, "tools[0].colour"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}},
         "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "mode": "auto",
                                              "tools": [{"type": "function", "name": "nope"}]}},
         "tool_choice.tools[0]"),
        ({"max_tool_calls": 0}, "max_tool_calls"),
    ]  # fmt: skip
    for extra, param in refused:
        answer = post(client, funded, input="x", **extra)
        error = assert_error(answer, 400)
        assert error["param"] == param, (extra, error)
    named = assert_error(post(client, funded, input="x", tools=[{"type": "web_search"}]), 400)
    assert "web_search" in named["message"] and named["code"] == "unsupported_tool"
    # The same refusals on Samsar's completion route (unknown parameters aside: ignored there).
    session_id = new_session(client, funded)
    samsar = client.post(
        "/v1/assistant/completion",
        json={"session_id": session_id, "input": "x", "tools": [{"type": "web_search"}]},
        headers=funded.headers,
    )
    assert assert_error(samsar, 400)["param"] == "tools[0].type"
    assert balance(db, funded) == before


def test_a_function_call_and_its_output_round_trip(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    api = sdk(client, funded)
    scripted.script(calls=[PARIS])
    first = api.responses.create(
        model="smollm2-135m-instruct",
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
    )
    raw = client.get(f"/v1/responses/{first.id}", headers=funded.headers).json()
    strict_response(raw)
    sent = scripted.requests[-1]
    assert [f.name for f in sent.functions] == ["get_weather"]
    assert (sent.tool_choice.mode, sent.tool_choice.allowed) == ("required", ("get_weather",))
    assert first.tool_choice.type == "function"  # type: ignore[union-attr]
    [call] = first.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments, call.status) == (
        "call_paris",
        "get_weather",
        '{"city": "Paris"}',
        "completed",
    )
    assert call.id and call.id.startswith("fc_")

    scripted.script(text="It is sunny in Paris.")
    second = api.responses.create(
        model="smollm2-135m-instruct",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": "call_paris", "output": '{"sky": "sun"}'}
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == "It is sunny in Paris."
    messages = scripted.requests[-1].messages
    assistant = next(m for m in messages if m.calls)
    assert assistant.calls == (PARIS,)
    assert (messages[-1].role, messages[-1].call_id, messages[-1].text) == (
        "tool",
        "call_paris",
        '{"sky": "sun"}',
    )
    items = client.get(f"/v1/responses/{second.id}/input_items", headers=funded.headers).json()
    assert [(i["type"], i["call_id"], i["output"]) for i in items["data"]] == [
        ("function_call_output", "call_paris", '{"sky": "sun"}')
    ]
    # The Threads face shows the whole turn: the question, the call, its output, the answer.
    session_id = second.conversation.id  # type: ignore[union-attr]
    thread = client.get(
        f"/v1/threads/{session_id}/messages?order=asc", headers=funded.headers
    ).json()
    texts = [m["content"][0]["text"]["value"] for m in thread["data"]]
    assert texts[0] == "What is the weather in Paris?"
    assert "get_weather" in texts[1] and "Paris" in texts[1]
    assert texts[2:] == ['{"sky": "sun"}', "It is sunny in Paris."]
    # An output for a call that never happened is a 400, and free.
    orphan = post(
        client,
        funded,
        previous_response_id=second.id,
        input=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}],
    )
    assert assert_error(orphan, 400, "unknown_call_id")["param"] == "input[0].call_id"


def test_a_client_replaying_its_own_history_without_storage(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    scripted.script(text="Sunny in Paris, rain in Tokyo.")
    history = [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "get_weather",
         "arguments": '{"city": "Tokyo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sun"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "rain"}]},
    ]  # fmt: skip
    answer = post(client, funded, input=history, tools=[WEATHER], store=False)
    assert answer.status_code == 200, answer.text
    strict_response(answer.json())
    roles = [(m.role, m.call_id, len(m.calls), m.text) for m in scripted.requests[-1].messages[1:]]
    assert roles == [
        ("user", None, 0, "Weather in Paris and Tokyo?"),
        ("assistant", None, 2, ""),
        ("tool", "c1", 0, "sun"),
        ("tool", "c2", 0, "rain"),
    ]
    misplaced = post(client, funded, input=[history[3], history[1]], tools=[WEATHER], store=False)
    assert assert_error(misplaced, 400, "unknown_call_id")["param"] == "input[0].call_id"
    bad = post(client, funded, input=[{"type": "function_call", "call_id": "c1"}])
    assert assert_error(bad, 400)["param"] == "input[0].name"


def test_streamed_parallel_function_calls(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    scripted.script(text="Let me check.", calls=[PARIS, TOKYO])
    answer, events = stream_events(client, funded, input="Paris and Tokyo?", tools=[WEATHER, TIME])
    assert answer.status_code == 200
    strict_events(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    calls = [e for e in events if e["type"] == "response.output_item.added"][1:]
    assert [c["item"]["call_id"] for c in calls] == ["call_paris", "call_tokyo"]
    for call, expected in zip(calls, (PARIS, TOKYO), strict=True):
        item_id = call["item"]["id"]
        mine = [
            e
            for e in events
            if e.get("item_id") == item_id or e.get("item", {}).get("id") == item_id
        ]
        assert [e["type"] for e in mine] == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ]
        deltas = "".join(e["delta"] for e in mine if e["type"].endswith(".delta"))
        assert deltas == expected.arguments == mine[3]["arguments"]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    stored = client.get(f"/v1/responses/{final['id']}", headers=funded.headers).json()
    assert stored["output"] == final["output"]

    # One call at most when parallel calls are off; none when tool_choice is "none".
    _, single = stream_events(
        client, funded, input="Both?", tools=[WEATHER], parallel_tool_calls=False
    )
    strict_events(single)
    assert [
        i["call_id"] for i in single[-1]["response"]["output"] if i["type"] == "function_call"
    ] == ["call_paris"]
    _, none = stream_events(client, funded, input="Both?", tools=[WEATHER], tool_choice="none")
    assert [i["type"] for i in none[-1]["response"]["output"]] == ["message"]
    assert scripted.requests[-1].functions == ()


def test_samsar_completion_calls_functions_plain_and_streamed(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    session_id = new_session(client, funded)
    scripted.script(calls=[PARIS])
    made = client.post(
        "/v1/assistant/completion",
        json={"session_id": session_id, "input": "Paris?", "tools": [WEATHER],
              "tool_choice": "required"},
        headers=funded.headers,
    )  # fmt: skip
    assert made.status_code == 200, made.text
    assert [i.type for i in strict_response(made.json()).output] == ["function_call"]
    scripted.script(text="Sunny.")
    _, events = stream_events(
        client,
        funded,
        "/v1/assistant/completion",
        session_id=session_id,
        input=[{"type": "function_call_output", "call_id": "call_paris", "output": "sun"}],
        tools=[WEATHER],
    )
    strict_events(events)
    assert events[-1]["response"]["output_text"] == "Sunny."
    assert scripted.requests[-1].messages[-1].call_id == "call_paris"


def test_a_failed_stream_is_a_valid_failed_response(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    scripted.script(text="a b c d", calls=[PARIS])
    scripted.fail_after = 1
    _, events = stream_events(client, funded, input="x", tools=[WEATHER])
    typed = strict_events(events)
    assert typed[-1].type == "response.failed"
    assert typed[-1].response.error.code == "server_error"


def test_tool_definitions_count_toward_the_hold(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    scripted.script(text="ok")
    plain, _ = stream_events(client, funded, input="Hi.")
    offered, _ = stream_events(client, funded, input="Hi.", tools=[WEATHER, TIME])
    held = [float(r.headers["x-credits-reserved"]) for r in (plain, offered)]
    assert held[1] > held[0]


def test_an_image_the_upstream_chose_to_make_is_streamed_and_billed(
    client: TestClient, funded: Tenant, scripted: ScriptedChat
) -> None:
    scripted.script(text="Here is your fox.")
    scripted.items = [{"type": "image_generation_call", "id": "ig_up", "result": "aGk=",
                       "revised_prompt": "a fox", "status": "completed"}]  # fmt: skip
    _, plain = stream_events(client, funded, input="A fox?")
    _, events = stream_events(client, funded, input="A fox?", tools=[{"type": "image_generation"}])
    strict_events(events)
    assert scripted.requests[-1].tools == ({"type": "image_generation"},)
    kinds = [e["type"] for e in events if "image_generation_call" in e["type"]]
    assert kinds == [
        f"response.image_generation_call.{s}" for s in ("in_progress", "generating", "completed")
    ]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "image_generation_call"]
    assert final["output"][1]["result"] == "aGk="
    charged = [float(r["credits"]["charged"]) for r in (plain[-1]["response"], final)]
    assert charged[1] - charged[0] > 1  # the image's price (several credits at any quality)
