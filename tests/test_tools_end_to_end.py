"""Function calling end to end: the official openai SDK and Samsar's completion route against the
app, with the real local model (a forced call) and an upstream that chooses calls (scripted at its
HTTP boundary), plain and streamed; every object and event checked against the SDK's types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.providers.settings import ProviderSettings
from tests.conftest import Tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.openai_shapes import strict_events, strict_response
from tests.test_assistant import FUNDS, new_session
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


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.stop()


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, FUNDS)
    return tenant


def sdk(client: TestClient, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=tenant.api_key, http_client=client, max_retries=0
    )


def streamed(client: TestClient, tenant: Tenant, path: str, body: dict[str, Any]) -> list[Any]:
    with client.stream(
        "POST", path, json={**body, "stream": True}, headers=tenant.headers
    ) as answer:
        assert answer.status_code == 200
        events = [json.loads(x[6:]) for x in answer.iter_lines() if x.startswith("data: ")]
    strict_events(events)
    return events


def test_the_local_model_makes_a_forced_call(client: TestClient, funded: Tenant) -> None:
    api = sdk(client, funded)
    made = api.responses.create(
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=48,
    )
    strict_response(client.get(f"/v1/responses/{made.id}", headers=funded.headers).json())
    calls = [item for item in made.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    arguments = json.loads(calls[0].arguments)  # the grammar makes it valid JSON of the schema
    assert isinstance(arguments["city"], str)
    follow = api.responses.create(
        previous_response_id=made.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
        max_output_tokens=16,
    )
    assert follow.status == "completed" or follow.status == "incomplete"
    # Streamed, on Samsar's route, with tool_choice "required".
    session_id = new_session(client, funded)
    events = streamed(
        client,
        funded,
        "/v1/assistant/completion",
        {"session_id": session_id, "input": "Weather in Oslo?", "tools": [WEATHER],
         "tool_choice": "required", "max_output_tokens": 48},
    )  # fmt: skip
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    final = events[-1]["response"]
    [call] = [i for i in final["output"] if i["type"] == "function_call"]
    assert call["arguments"] == done["arguments"]
    assert isinstance(json.loads(call["arguments"])["city"], str)


def test_an_upstream_that_chooses_calls(
    settings: Settings, db: Database, funded: Tenant, upstream: FakeUpstream
) -> None:
    upstream.reset()
    llm = ProviderSettings(
        provider="openai", base_url=upstream.base_url, model="gpt-test", api_key="sk-upstream"
    )
    upstream.script_tool_calls(
        [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Rome"})]
    )
    upstream.script_text("Sunny in Oslo, rain in Rome.")
    with TestClient(create_app(settings.model_copy(update={"llm": llm}))) as client:
        api = sdk(client, funded)
        made = api.responses.create(input="Oslo and Rome?", tools=[WEATHER])  # type: ignore[list-item]
        strict_response(client.get(f"/v1/responses/{made.id}", headers=funded.headers).json())
        calls = [i for i in made.output if i.type == "function_call"]
        assert [json.loads(c.arguments)["city"] for c in calls] == ["Oslo", "Rome"]
        sent = upstream.bodies("chat")[-1]
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": f"weather {i}"}
            for i, c in enumerate(calls)
        ]
        answer = api.responses.create(previous_response_id=made.id, input=outputs, tools=[WEATHER])  # type: ignore[arg-type, list-item]
        assert answer.output_text == "Sunny in Oslo, rain in Rome."
        history = upstream.bodies("chat")[-1]["messages"]
        assert [m["role"] for m in history[-3:]] == ["assistant", "tool", "tool"]
        assert [c["id"] for c in history[-3]["tool_calls"]] == [c.call_id for c in calls]

        upstream.reset()
        upstream.script_tool_calls([("get_weather", {"city": "Lima"})])
        session_id = new_session(client, funded)
        events = streamed(
            client,
            funded,
            "/v1/assistant/completion",
            {"session_id": session_id, "input": "Lima?", "tools": [WEATHER]},
        )
        deltas = "".join(
            e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
        )
        assert json.loads(deltas) == {"city": "Lima"}
        final = events[-1]["response"]
        assert [i["type"] for i in final["output"]] == ["function_call"]
