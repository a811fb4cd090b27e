"""Function calling through `/v1/chat/completions` end to end, with the official openai SDK: the
local model forced to call (plain and streamed), and a remote model choosing to call (`auto`),
scripted at the upstream's HTTP boundary, through a real server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.money import charges, money, remote_env
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

FUNDS = 1_000_000_000
WEATHER: Any = {
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
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Oslo?"}]


def follow_up(call_id: str, arguments: str, output: str) -> list[Any]:
    """The conversation after the model called get_weather and the client ran it."""
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": output},
    ]


# The local model: a named or required call is written by a grammar, so it always comes.


@pytest.fixture
def sdk(client: TestClient, db: Database, tenant: Tenant) -> openai.OpenAI:
    grant(db, tenant, FUNDS)
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=tenant.api_key, http_client=client, max_retries=0
    )


def test_local_forced_call_then_the_answer_from_its_output(
    sdk: openai.OpenAI, db: Database, tenant: Tenant
) -> None:
    first = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert isinstance(arguments.get("city"), str)
    answer = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=follow_up(call.id, call.function.arguments, "Snow, -3 C."),  # type: ignore[union-attr]
        tools=[WEATHER, TIME],
        tool_choice="none",
        max_tokens=16,
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert len(charges(db, tenant)) == 2


def test_local_required_call_streams_its_arguments(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        call
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    ]
    assert pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    assert {p.index for p in pieces} == {0}
    arguments = "".join((p.function.arguments or "") for p in pieces if p.function)
    assert isinstance(json.loads(arguments)["city"], str)
    finishing = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishing == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


# A remote model that chooses to call (scripted at its HTTP boundary), behind a real server.


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.stop()


@pytest.fixture
def remote(
    settings_env: dict[str, str], db: Database, fake: FakeUpstream
) -> Iterator[tuple[openai.OpenAI, Tenant]]:
    tenant = make_tenant(db, "tools")
    grant(db, tenant, FUNDS)
    server = LiveServer(remote_env(settings_env, fake))
    try:
        client = openai.OpenAI(
            base_url=f"{server.base_url}/v1", api_key=tenant.api_key, max_retries=0
        )
        yield client, tenant
    finally:
        server.stop()


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_remote_auto_call_loop(
    remote: tuple[openai.OpenAI, Tenant], fake: FakeUpstream, db: Database, streamed: bool
) -> None:
    client, tenant = remote
    fake.script_tool_calls([("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET"})])
    fake.script_text("Snow in Oslo, at noon.")
    if streamed:
        with client.chat.completions.stream(
            model="gpt-4o-mini", messages=ASK, tools=[WEATHER, TIME]
        ) as stream:
            first = stream.get_final_completion()
    else:
        first = client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, tools=[WEATHER, TIME]
        )
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    named = [(c.function.name, json.loads(c.function.arguments)) for c in calls]  # type: ignore[union-attr]
    assert named == [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET"})]
    outputs = [
        {"role": "tool", "tool_call_id": c.id, "content": f"output of {c.id}"} for c in calls
    ]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [c.model_dump(exclude_none=True) for c in calls],
    }
    messages: Any = [*ASK, assistant, *outputs]
    final = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER, TIME], stream=False
    )
    assert final.choices[0].message.content == "Snow in Oslo, at noon."
    assert final.choices[0].finish_reason == "stop"
    # What the upstream was sent: the functions, and the history paired by call id.
    sent = fake.bodies("chat")[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    tool_messages = [m for m in sent["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c.id for c in calls]
    assert len(charges(db, tenant)) == 2
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum and holds == 0
