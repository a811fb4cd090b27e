"""Agent frameworks as their users run them, against a real server process with the local model.

The OpenAI Agents SDK (both of its model classes, plain and streamed runs) and the Vercel AI SDK
through node (Responses and chat completions, plain and streamed) each run a tool-using turn:
the model calls `get_weather`, the framework runs it and sends its output back, and the server
answers again. The tiny local model is made to call the tool with `tool_choice`; the frameworks
reset it to `auto` after the call, so the second turn is the model's own answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from sessionary.providers.llm.local import BUNDLED_NAME
from tests.support.live import initialised_server

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).resolve().parent / "js"
set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("agents")
    with initialised_server(data, SESSIONARY_LOG_LEVEL="WARNING") as (live, key):
        yield live.base_url, key


def balance(base_url: str, key: str) -> float:
    response = httpx.get(f"{base_url}/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return float(response.json()["remainingCredits"])


def weather_agent(model: Any, seen: list[str]) -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"It is sunny in {city}."

    return Agent(
        name="weather",
        instructions="Answer questions about the weather with the get_weather tool.",
        tools=[get_weather],
        model=model,
        model_settings=ModelSettings(tool_choice="get_weather", max_tokens=48),
    )


def models(base_url: str, key: str) -> dict[str, Any]:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    return {
        "responses": OpenAIResponsesModel(model=BUNDLED_NAME, openai_client=client),
        "chat": OpenAIChatCompletionsModel(model=BUNDLED_NAME, openai_client=client),
    }


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_agents_sdk_runs_a_tool_using_agent(server: tuple[str, str], api: str) -> None:
    base_url, key = server
    before = balance(base_url, key)
    seen: list[str] = []
    agent = weather_agent(models(base_url, key)[api], seen)

    result = asyncio.run(Runner.run(agent, "What is the weather in Oslo?", max_turns=4))

    assert len(seen) == 1 and isinstance(seen[0], str) and seen[0]
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"], kinds
    assert isinstance(result.final_output, str)
    assert len(result.raw_responses) >= 2  # the call, then an answer that read its output
    usage = result.context_wrapper.usage
    assert usage.requests >= 2 and usage.input_tokens > 0
    assert balance(base_url, key) < before  # both model calls were billed


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_agents_sdk_streams_a_tool_using_agent(server: tuple[str, str], api: str) -> None:
    base_url, key = server
    seen: list[str] = []
    agent = weather_agent(models(base_url, key)[api], seen)
    raw_types: list[str] = []
    item_types: list[str] = []

    async def run() -> Any:
        result = Runner.run_streamed(agent, "What is the weather in Bergen?", max_turns=4)
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                raw_types.append(event.data.type)
            elif event.type == "run_item_stream_event":
                item_types.append(event.item.type)
        return result

    result = asyncio.run(run())

    assert len(seen) == 1
    assert "tool_call_item" in item_types and "tool_call_output_item" in item_types
    assert result.is_complete and isinstance(result.final_output, str)
    # The SDK builds its items from the server's stream events, so they must be real ones.
    assert "response.function_call_arguments.delta" in raw_types
    assert "response.completed" in raw_types


def ai_sdk(base_url: str, key: str, **plan: Any) -> dict[str, Any]:
    body = {"baseUrl": f"{base_url}/v1", "apiKey": key, "model": BUNDLED_NAME, **plan}
    done = subprocess.run(
        ["node", str(JS_DIR / "ai_sdk_calls.mjs")],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_ai_sdk_calls_a_tool(server: tuple[str, str], api: str, stream: bool) -> None:
    base_url, key = server
    result = ai_sdk(
        base_url,
        key,
        api=api,
        stream=stream,
        prompt="What is the weather in Oslo?",
        toolChoice={"type": "tool", "toolName": "get_weather"},
    )
    assert "error" not in result, result
    assert [c["toolName"] for c in result["toolCalls"]] == ["get_weather"]
    assert isinstance(result["toolCalls"][0]["input"]["city"], str)
    assert result["toolResults"][0]["output"]["forecast"] == "sunny"
    assert result["finishReason"] == "tool-calls"
    assert result["usage"]["inputTokens"] > 0


def test_ai_sdk_sees_an_unknown_tool_choice_refused(server: tuple[str, str]) -> None:
    base_url, key = server
    result = ai_sdk(
        base_url,
        key,
        api="responses",
        stream=False,
        prompt="Hi",
        toolChoice={"type": "tool", "toolName": "not_offered"},
    )
    assert result.get("status") == 400, result
