"""Function tools in the chat providers: the local model's forced and offered calls, and the
mapping to and from OpenAI-compatible upstreams (chat completions and the Responses API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from sessionary.kit.errors import InvalidRequest
from sessionary.providers.base import (
    CallDelta,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResult,
    FunctionCall,
    FunctionTool,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolChoice,
)
from sessionary.providers.llm.openai import OpenAIChat
from sessionary.providers.settings import ProviderSettings
from tests.support.fake_upstream import FakeUpstream

WEATHER = FunctionTool(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "The current weather in a city.",
)
TIME = FunctionTool(
    "get_time",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string", "maxLength": 24}},
        "required": ["timezone"],
        "additionalProperties": False,
    },
    "The current time in a timezone.",
)
ASK = [ChatMessage("user", "What is the weather in Oslo?")]
# A finished round: the model called get_weather, the client ran it and sent the output back.
HISTORY = [
    *ASK,
    ChatMessage("assistant", "", calls=(FunctionCall("call_1", "get_weather", '{"city":"Oslo"}'),)),
    ChatMessage("tool", '{"temperature": 21}', call_id="call_1"),
]


def run_stream(chat: ChatModel, request: ChatRequest) -> tuple[list[StreamEvent], ChatResult]:
    async def collect() -> tuple[list[StreamEvent], ChatResult]:
        events: list[StreamEvent] = []
        async for event in chat.stream(request):
            if isinstance(event, StreamDone):
                return events, event.result
            events.append(event)
        raise AssertionError("no StreamDone")

    return asyncio.run(collect())


def calls_from_deltas(events: Sequence[StreamEvent]) -> list[FunctionCall]:
    """What a client rebuilds from the deltas alone."""
    ids: dict[int, tuple[str, str]] = {}
    arguments: dict[int, str] = {}
    for event in events:
        if isinstance(event, CallDelta):
            if event.index not in ids:
                assert event.call_id and event.name, "the first delta of a call names it"
                ids[event.index] = (event.call_id, event.name)
                arguments[event.index] = ""
            else:
                assert event.call_id is None and event.name is None
            arguments[event.index] += event.arguments
    return [FunctionCall(*ids[i], arguments[i]) for i in sorted(ids)]


# Remote upstreams, at their HTTP boundary


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()


def remote(fake: FakeUpstream, api: str) -> ChatModel:
    settings = ProviderSettings(
        provider="openai",
        base_url=fake.base_url,
        model="gpt-fake",
        api=api,  # type: ignore[arg-type]
        max_retries=0,
    )
    return OpenAIChat(settings)  # not the registry's: it shares instances, and their probe


WEATHER_CALLS = [("get_weather", {"city": "Oslo", "unit": "celsius"})]
TWO_CALLS = [*WEATHER_CALLS, ("get_time", {"timezone": "Europe/Oslo"})]


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_remote_calls_come_back_as_calls(fake: FakeUpstream, api: str, streamed: bool) -> None:
    if api == "responses":
        fake.responses_mode = "script"
    fake.script_tool_calls(TWO_CALLS, text="Let me look.")
    chat = remote(fake, "auto")
    request = ChatRequest(ASK, functions=(WEATHER, TIME))
    if streamed:
        events, result = run_stream(chat, request)
        assert calls_from_deltas(events) == list(result.calls)
        assert sum(1 for e in events if isinstance(e, CallDelta) and e.arguments) >= 4
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Let me look."
    else:
        result = asyncio.run(chat.generate(request))
    assert result.finish_reason == "tool_calls"
    assert result.text == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in result.calls] == TWO_CALLS
    assert all(c.call_id.startswith("call_") for c in result.calls)
    assert len({c.call_id for c in result.calls}) == 2
    assert fake.bodies(api)  # the upstream API the test meant was the one used


def test_chat_completions_request_mapping(fake: FakeUpstream) -> None:
    fake.script_tool_calls(WEATHER_CALLS)
    chat = remote(fake, "chat")
    asyncio.run(
        chat.generate(
            ChatRequest(
                HISTORY,
                functions=(WEATHER, TIME),
                parallel_tool_calls=False,
                stop=("END",),
                seed=7,
                presence_penalty=0.5,
                frequency_penalty=0.25,
            )
        )
    )
    body = fake.bodies("chat")[-1]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER.parameters,
            "strict": False,
        },
    }
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False
    assert (body["stop"], body["seed"]) == (["END"], 7)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]


@pytest.mark.parametrize(
    ("choice", "names", "sent_choice"),
    [
        (ToolChoice("none"), ["get_weather", "get_time"], "none"),
        (ToolChoice("required"), ["get_weather", "get_time"], "required"),
        (ToolChoice("auto", ("get_time",)), ["get_time"], "auto"),
        (
            ToolChoice("required", ("get_weather", "get_time")),
            ["get_weather", "get_time"],
            "required",
        ),
        (
            ToolChoice("required", ("get_time",)),
            ["get_time"],
            {"type": "function", "function": {"name": "get_time"}},
        ),
    ],
)
def test_tool_choice_mapping(
    fake: FakeUpstream, choice: ToolChoice, names: list[str], sent_choice: Any
) -> None:
    fake.script_text("Fine.")
    asyncio.run(
        remote(fake, "chat").generate(
            ChatRequest(ASK, functions=(WEATHER, TIME), tool_choice=choice)
        )
    )
    body = fake.bodies("chat")[-1]
    assert [t["function"]["name"] for t in body["tools"]] == names
    assert body["tool_choice"] == sent_choice


def test_no_functions_sends_no_tool_fields(fake: FakeUpstream) -> None:
    fake.script_text("Fine.")
    result = asyncio.run(remote(fake, "chat").generate(ChatRequest(ASK)))
    assert (result.text, result.finish_reason, result.calls) == ("Fine.", "stop", ())
    body = fake.bodies("chat")[-1]
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)


def test_a_choice_naming_an_unknown_function_is_a_400(fake: FakeUpstream) -> None:
    chat = remote(fake, "chat")
    request = ChatRequest(ASK, functions=(WEATHER,), tool_choice=ToolChoice("required", ("nope",)))
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(chat.generate(request))
    assert refused.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        asyncio.run(chat.generate(ChatRequest(ASK, tool_choice=ToolChoice("required"))))
    assert not fake.bodies("chat")


def test_responses_request_mapping(fake: FakeUpstream) -> None:
    fake.responses_mode = "script"
    fake.script_tool_calls(WEATHER_CALLS)
    hosted = {"type": "image_generation"}
    request = ChatRequest(
        HISTORY,
        functions=(WEATHER, TIME),
        tool_choice=ToolChoice("required", ("get_weather",)),
        tools=(hosted,),
    )
    result = asyncio.run(remote(fake, "responses").generate(request))
    assert result.calls[0].name == "get_weather"
    body = fake.bodies("responses")[-1]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER.parameters,
            "strict": False,
        },
        hosted,
    ]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["parallel_tool_calls"] is True
    assert body["input"][1:] == [
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temperature": 21}'},
    ]


def test_options_the_responses_api_lacks_go_to_chat_completions(fake: FakeUpstream) -> None:
    fake.responses_mode = "script"
    fake.script_tool_calls(WEATHER_CALLS)
    chat = remote(fake, "auto")
    result = asyncio.run(chat.generate(ChatRequest(ASK, functions=(WEATHER,), seed=3)))
    assert result.calls[0].name == "get_weather"
    assert fake.bodies("chat")[-1]["seed"] == 3
    assert not fake.bodies("responses")
    # Hosted tools need the Responses API: with a chat-only option that cannot be honoured.
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(
            chat.generate(ChatRequest(ASK, stop=("x",), tools=({"type": "image_generation"},)))
        )
    assert refused.value.param == "stop"


def test_a_tool_loop_against_the_script(fake: FakeUpstream) -> None:
    """What an end-to-end test of tool_choice auto does: a call, then the answer with its output."""
    fake.script_tool_calls(WEATHER_CALLS)
    fake.script_text("It is 21 degrees in Oslo.")
    chat = remote(fake, "chat")
    first = asyncio.run(chat.generate(ChatRequest(ASK, functions=(WEATHER,))))
    assert first.finish_reason == "tool_calls"
    history = [
        *ASK,
        ChatMessage("assistant", first.text, calls=first.calls),
        ChatMessage("tool", '{"temperature": 21}', call_id=first.calls[0].call_id),
    ]
    second = asyncio.run(chat.generate(ChatRequest(history, functions=(WEATHER,))))
    assert (second.text, second.finish_reason) == ("It is 21 degrees in Oslo.", "stop")
    sent = fake.bodies("chat")[-1]["messages"]
    assert sent[-1]["tool_call_id"] == first.calls[0].call_id
