"""The bundled models, for real: llama.cpp chat and the NumPy all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from sessionary.kit.errors import InvalidRequest
from sessionary.providers.base import ChatMessage, ChatRequest, StreamDone, TextDelta
from sessionary.providers.container import Providers
from sessionary.providers.settings import ProviderSettings

pytestmark = pytest.mark.slow

HELLO = [
    ChatMessage("system", "You are a concise assistant."),
    ChatMessage("user", "Name one colour of the rainbow."),
]


@pytest.fixture(scope="module")
def providers() -> Providers:
    built = Providers.build(
        ProviderSettings(provider="local"),
        ProviderSettings(provider="local"),
        ProviderSettings(provider="none"),
    )
    built.load()
    return built


def test_chat_generates_text_with_usage(providers: Providers) -> None:
    chat = providers.chat()
    assert chat.name == "smollm2-135m-instruct"
    result = asyncio.run(chat.generate(ChatRequest(HELLO, max_output_tokens=24, temperature=0)))
    assert result.text.strip()
    assert result.usage.input_tokens > 10
    assert 0 < result.usage.output_tokens <= 24
    assert result.finish_reason in ("stop", "length")
    assert result.usage.input_tokens == asyncio.run(chat.count_tokens(HELLO))


def test_max_output_tokens_gives_length(providers: Providers) -> None:
    request = ChatRequest(
        [ChatMessage("user", "Write a long story about a dragon.")], max_output_tokens=5
    )
    result = asyncio.run(providers.chat().generate(request))
    assert result.finish_reason == "length"
    assert result.usage.output_tokens == 5


def test_stream_yields_deltas_then_the_result(providers: Providers) -> None:
    async def collect() -> tuple[list[str], StreamDone]:
        deltas: list[str] = []
        async for event in providers.chat().stream(ChatRequest(HELLO, max_output_tokens=24)):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                return deltas, event
        raise AssertionError("no StreamDone")

    deltas, done = asyncio.run(collect())
    assert len(deltas) > 1
    assert "".join(deltas) == done.result.text
    assert done.result.usage.input_tokens > 10
    assert done.result.usage.output_tokens > 0


def test_leaving_a_stream_stops_the_generation(providers: Providers) -> None:
    chat = providers.chat()
    request = ChatRequest([ChatMessage("user", "Count from 1 to 500.")], max_output_tokens=1500)

    async def take_two_then_leave() -> float:
        stream = chat.stream(request)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        started = time.monotonic()
        # The worker is free again quickly: the abandoned generation did not run to 1500 tokens.
        await chat.generate(ChatRequest(HELLO, max_output_tokens=4))
        return time.monotonic() - started

    assert asyncio.run(take_two_then_leave()) < 5


def test_concurrent_requests_queue_safely(providers: Providers) -> None:
    async def many() -> list[str]:
        results = await asyncio.gather(
            *(
                providers.chat().generate(
                    ChatRequest([ChatMessage("user", f"Say the number {i}.")], max_output_tokens=8)
                )
                for i in range(6)
            )
        )
        return [r.text for r in results]

    texts = asyncio.run(many())
    assert len(texts) == 6
    assert all(isinstance(t, str) for t in texts)


def test_json_schema_constrains_the_output(providers: Providers) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 24}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
    }
    request = ChatRequest(
        [ChatMessage("user", "Give a city and whether it is sunny, as JSON.")],
        max_output_tokens=80,
        json_schema=schema,
    )
    data = json.loads(asyncio.run(providers.chat().generate(request)).text)
    assert isinstance(data["city"], str)
    assert isinstance(data["sunny"], bool)


def test_a_prompt_beyond_the_context_window_is_400(providers: Providers) -> None:
    huge = ChatRequest([ChatMessage("user", "word " * 20_000)])
    with pytest.raises(InvalidRequest, match="context window"):
        asyncio.run(providers.chat().generate(huge))


def test_embeddings_are_normalised_batched_and_meaningful(providers: Providers) -> None:
    embedder = providers.embedder()
    assert (embedder.name, embedder.dimension) == ("all-minilm-l6-v2", 384)
    texts = [
        "A cosy apartment near the park",
        "Comfortable flat close to a green park",
        "Quarterly tax filing deadlines for corporations",
    ]
    batch = asyncio.run(embedder.embed(texts))
    assert batch.input_tokens > len(texts)
    vectors = np.asarray(batch.vectors)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3
    one_by_one = [asyncio.run(embedder.embed([t])).vectors[0] for t in texts]
    assert np.allclose(vectors, np.asarray(one_by_one), atol=1e-5)
    assert asyncio.run(embedder.embed([])).vectors == []


def test_no_images_provider_is_a_400_naming_the_setting(providers: Providers) -> None:
    with pytest.raises(InvalidRequest) as refused:
        providers.image_model()
    assert "SESSIONARY_IMAGES__PROVIDER" in refused.value.message


def test_provider_calls_and_tokens_are_counted(providers: Providers) -> None:
    from sessionary.kit.metrics import DOMAIN_REGISTRY

    def value(name: str, **labels: str) -> float:
        return DOMAIN_REGISTRY.get_sample_value(name, labels) or 0.0

    chat = providers.chat()
    model = chat.name
    calls = value("sessionary_provider_calls_total", kind="chat", model=model, outcome="ok")
    tokens_out = value(
        "sessionary_provider_tokens_total", kind="chat", model=model, direction="output"
    )
    result = asyncio.run(chat.generate(ChatRequest(HELLO, max_output_tokens=6)))
    assert (
        value("sessionary_provider_calls_total", kind="chat", model=model, outcome="ok")
        == calls + 1
    )
    assert value(
        "sessionary_provider_tokens_total", kind="chat", model=model, direction="output"
    ) == (tokens_out + result.usage.output_tokens)

    async def leave_early() -> None:
        stream = chat.stream(
            ChatRequest([ChatMessage("user", "Count to fifty.")], max_output_tokens=200)
        )
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]

    cancelled = value(
        "sessionary_provider_calls_total", kind="chat", model=model, outcome="cancelled"
    )
    asyncio.run(leave_early())
    assert (
        value("sessionary_provider_calls_total", kind="chat", model=model, outcome="cancelled")
        == cancelled + 1
    )
    embedder = providers.embedder()
    before = value(
        "sessionary_provider_tokens_total",
        kind="embeddings",
        model=embedder.name,
        direction="input",
    )
    batch = asyncio.run(embedder.embed(["one sentence", "another one"]))
    after = value(
        "sessionary_provider_tokens_total",
        kind="embeddings",
        model=embedder.name,
        direction="input",
    )
    assert after == before + batch.input_tokens
