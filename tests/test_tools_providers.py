"""Function tools in the chat providers: the local model's forced and offered calls, and the
mapping to and from OpenAI-compatible upstreams (chat completions and the Responses API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import jsonschema_rs
import pytest

from sessionary.kit.errors import InvalidRequest
from sessionary.providers import registry
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
from sessionary.providers.llm.local_tools import CallScanner, render_messages
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


# The local model (llama.cpp)


@pytest.fixture(scope="module")
def local() -> ChatModel:
    chat = registry.build("llm", ProviderSettings(provider="local"))
    chat.load()
    return chat


def check_arguments(call: FunctionCall, *functions: FunctionTool) -> None:
    """Valid JSON that the called function's schema accepts."""
    function = next(f for f in functions if f.name == call.name)
    jsonschema_rs.validate(function.parameters, json.loads(call.arguments))


@pytest.mark.slow
def test_local_named_function_is_called_with_valid_arguments(local: ChatModel) -> None:
    request = ChatRequest(
        ASK,
        functions=(WEATHER, TIME),
        tool_choice=ToolChoice("required", ("get_time",)),
        max_output_tokens=40,
    )
    result = asyncio.run(local.generate(request))
    assert (result.text, result.finish_reason) == ("", "tool_calls")
    [call] = result.calls
    assert call.name == "get_time"
    assert call.call_id.startswith("call_")
    check_arguments(call, TIME)
    # The prompt billed holds the tool definitions as rendered.
    assert result.usage.input_tokens > asyncio.run(local.count_tokens(ASK)) + 40
    assert 0 < result.usage.output_tokens <= 40


@pytest.mark.slow
def test_local_required_call_among_two_streams_its_arguments(local: ChatModel) -> None:
    request = ChatRequest(
        HISTORY + [ChatMessage("user", "And what time is it there?")],
        functions=(WEATHER, TIME),
        tool_choice=ToolChoice("required"),
        max_output_tokens=40,
    )
    events, result = run_stream(local, request)
    assert result.finish_reason == "tool_calls"
    assert all(isinstance(e, CallDelta) for e in events)
    assert sum(1 for e in events if isinstance(e, CallDelta) and e.arguments) > 1
    assert calls_from_deltas(events) == list(result.calls)
    [call] = result.calls  # one call, though parallel calls are allowed
    check_arguments(call, WEATHER, TIME)


@pytest.mark.slow
def test_local_auto_shows_the_tools_and_none_hides_them(local: ChatModel) -> None:
    bare = asyncio.run(local.count_tokens(ASK))
    shown = asyncio.run(
        local.generate(ChatRequest(ASK, functions=(WEATHER,), max_output_tokens=24))
    )
    assert shown.usage.input_tokens > bare + 40
    for call in shown.calls:  # the tiny model may or may not call: a call is well formed
        check_arguments(call, WEATHER)
    assert shown.finish_reason in (
        ("tool_calls",) if shown.calls else ("stop", "length", "repetition")
    )
    hidden = asyncio.run(
        local.generate(
            ChatRequest(
                ASK, functions=(WEATHER,), tool_choice=ToolChoice("none"), max_output_tokens=8
            )
        )
    )
    assert (hidden.usage.input_tokens, hidden.calls) == (bare, ())


@pytest.mark.slow
def test_local_seed_stop_and_penalties_reach_llama_cpp(local: ChatModel) -> None:
    def answer(**options: Any) -> str:
        request = ChatRequest(ASK, max_output_tokens=12, temperature=1.5, **options)
        return asyncio.run(local.generate(request)).text

    assert answer(seed=11, presence_penalty=0.5) == answer(seed=11, presence_penalty=0.5)
    assert " " not in answer(stop=(" ",), frequency_penalty=0.1)


def test_local_choice_naming_an_unknown_function_is_a_400(local: ChatModel) -> None:
    request = ChatRequest(ASK, functions=(WEATHER,), tool_choice=ToolChoice("auto", ("nope",)))
    with pytest.raises(InvalidRequest) as refused:
        asyncio.run(local.generate(request))
    assert refused.value.param == "tool_choice"


# The local prompt's text for tools, without a model


def test_calls_are_found_in_a_free_answer_split_anywhere() -> None:
    answer = (
        'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        ' <tool_call>{"name": "unknown", "arguments": {}}</tool_call>'
        " <tool_call>not json</tool_call> a < b"
    )
    for size in (1, 3, 7, len(answer)):
        scanner = CallScanner({"get_weather"})
        text = ""
        for start in range(0, len(answer), size):
            text += scanner.feed(answer[start : start + size])[0]
        text += scanner.finish()[0]
        [call] = scanner.calls
        assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
        assert text == (
            'Sure.  <tool_call>{"name": "unknown", "arguments": {}}</tool_call>'
            " <tool_call>not json</tool_call> a < b"
        )


def test_a_call_left_open_at_the_end_still_counts() -> None:
    scanner = CallScanner({"get_weather"})
    scanner.feed('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}')
    text, [call] = scanner.finish()
    assert (text, json.loads(call.arguments)) == ("", {"city": "Oslo"})


def test_history_with_calls_and_outputs_renders_as_plain_messages() -> None:
    two_outputs = [
        *HISTORY[:1],
        ChatMessage(
            "assistant",
            "Looking.",
            calls=(
                FunctionCall("call_1", "get_weather", '{"city":"Oslo"}'),
                FunctionCall("call_2", "get_time", '{"timezone":"CET"}'),
            ),
        ),
        ChatMessage("tool", "21", call_id="call_1"),
        ChatMessage("tool", "12:00", call_id="call_2"),
    ]
    rendered = render_messages(
        [ChatMessage("developer", "Be brief."), *two_outputs], (WEATHER, TIME)
    )
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert '"name": "get_time"' in rendered[0]["content"]
    assert rendered[2]["content"] == (
        "Looking.\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city":"Oslo"}}</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {"timezone":"CET"}}</tool_call>'
    )
    assert rendered[3]["content"] == (
        '<tool_response name="get_weather">\n21\n</tool_response>\n'
        '<tool_response name="get_time">\n12:00\n</tool_response>'
    )
    # Without functions (tool_choice "none"), no listing; the history still reads the same.
    assert render_messages(two_outputs, ())[0] == {"role": "user", "content": ASK[0].text}
