"""The bundled model behaves, for real: the README's prompts get answers that end by themselves,
well before the local output cap, with no run of 8 words said three times; a loop is cut; the
history reaches the model's prompt."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sessionary.providers.llm.local as local
from sessionary.assistant.enhance import enhance, enhance_request
from sessionary.assistant.prompts import DEFAULT_SYSTEM_PROMPT
from sessionary.providers.base import ChatMessage, ChatRequest, ChatResult, StreamDone, TextDelta
from sessionary.providers.llm.local import LlamaCppChat, LocalSampling
from sessionary.providers.llm.repetition import repeated_ngrams
from sessionary.providers.settings import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
# The prompts a new user sends first: the README's examples (checked to still be there).
README_PROMPTS = [
    "Write a one-line launch caption.",
    "Write a caption.",
    "Hello!",
    "Hi",
]
SYSTEM = ChatMessage("system", DEFAULT_SYSTEM_PROMPT)


@pytest.fixture(scope="module")
def chat() -> LlamaCppChat:
    model = LlamaCppChat(ProviderSettings(provider="local"))
    model.load()
    return model


def ask(chat: LlamaCppChat, *messages: ChatMessage, **options: Any) -> ChatResult:
    return asyncio.run(chat.generate(ChatRequest([SYSTEM, *messages], **options)))


def assert_behaves(result: ChatResult) -> None:
    assert result.text.strip()
    assert result.finish_reason in ("stop", "repetition"), result
    assert result.usage.output_tokens < LOCAL_MAX_OUTPUT_TOKENS, result
    assert repeated_ngrams(result.text) == [], result.text


def test_the_prompts_are_the_readmes() -> None:
    text = README.read_text()
    for prompt in README_PROMPTS:
        assert re.search(rf"[\"']{re.escape(prompt)}\\?[\"']", text), prompt


@pytest.mark.parametrize("prompt", README_PROMPTS)
@pytest.mark.parametrize("temperature", [None, 0.0])
def test_readme_prompts_end_before_the_cap_without_looping(
    chat: LlamaCppChat, prompt: str, temperature: float | None
) -> None:
    # No max_output_tokens: the local default cap applies.
    assert_behaves(ask(chat, ChatMessage("user", prompt), temperature=temperature))


def test_the_readme_second_turn_streams_and_ends_before_the_cap(chat: LlamaCppChat) -> None:
    first = ask(chat, ChatMessage("user", "Write a caption."))
    history = [ChatMessage("user", "Write a caption."), ChatMessage("assistant", first.text)]

    async def stream() -> tuple[list[str], ChatResult]:
        deltas: list[str] = []
        request = ChatRequest([SYSTEM, *history, ChatMessage("user", "Shorter.")])
        async for event in chat.stream(request):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            elif isinstance(event, StreamDone):
                return deltas, event.result
        raise AssertionError("no StreamDone")

    deltas, result = asyncio.run(stream())
    assert "".join(deltas) == result.text
    assert_behaves(result)


def test_a_model_that_loops_is_stopped_before_its_third_time(
    chat: LlamaCppChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the penalties, greedy SmolLM2 loops on this prompt until the cap (measured: 256
    tokens, 9 runs of 8 words three times or more); the guard ends it after the second time."""
    monkeypatch.setattr(local, "SAMPLING", LocalSampling(repeat_penalty=1.0, frequency_penalty=0))
    result = ask(chat, ChatMessage("user", "Write a one-line launch caption."), temperature=0.0)
    assert_behaves(result)
    assert result.usage.output_tokens < 100


def _streamed(chat: LlamaCppChat, question: str) -> tuple[str, ChatResult]:
    """The deltas a stream of `question` delivered, and its final result."""

    async def collect() -> tuple[str, ChatResult]:
        deltas = ""
        async for event in chat.stream(ChatRequest([ChatMessage("user", question)])):
            if isinstance(event, TextDelta):
                deltas += event.text
            elif isinstance(event, StreamDone):
                return deltas, event.result
        raise AssertionError("no StreamDone")

    return asyncio.run(collect())


def test_the_guard_ends_a_looping_stream_at_once(
    chat: LlamaCppChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that would loop for its whole budget: generation stops at the third time, the
    client never sees it, and the usage is what it received."""
    loop = "We make the best coffee in town, come and see. "
    pulled: list[int] = []

    def looping(**kwargs: Any) -> Iterator[dict[str, Any]]:
        assert kwargs["stream"] is True
        for index in range(kwargs["max_tokens"]):
            pulled.append(index)
            word = (loop.split(" ")[index % 10]) + " "
            yield {"choices": [{"text": word, "finish_reason": None}]}

    chat._ensure_loaded()
    monkeypatch.setattr(chat._llama, "create_completion", looping)

    deltas, result = _streamed(chat, "Coffee?")
    assert result.finish_reason == "repetition"
    assert deltas == result.text == (loop * 2).rstrip() + " "
    assert len(pulled) < 30  # stopped as soon as the loop came round the third time
    assert 0 < result.usage.output_tokens < 30


def test_nul_bytes_from_the_model_come_out_as_replacement_characters(
    chat: LlamaCppChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte-fallback token can decode to NUL, which PostgreSQL cannot store: the streamed
    deltas and the result carry U+FFFD instead, as for an upstream's (`json_post.storable`)."""

    def with_nul(**kwargs: Any) -> Iterator[dict[str, Any]]:
        for piece in ("Hello", "\x00", " world\x00."):
            yield {"choices": [{"text": piece, "finish_reason": None}]}
        yield {"choices": [{"text": "", "finish_reason": "stop"}]}

    chat._ensure_loaded()
    monkeypatch.setattr(chat._llama, "create_completion", with_nul)

    deltas, result = _streamed(chat, "Hi")
    assert deltas == result.text == "Hello\ufffd world\ufffd."


def test_json_answers_are_not_cut_by_the_guard(chat: LlamaCppChat) -> None:
    """JSON repeats itself by nature (keys, values): the grammar ends it, not the guard."""
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"const": "on sale now at the shop"}}},
        "required": ["tags"],
    }
    result = ask(
        chat,
        ChatMessage("user", "List the tag 'on sale now at the shop' five times, as JSON."),
        json_schema=schema,
        max_output_tokens=120,
    )
    assert result.finish_reason != "repetition"
    assert result.text.strip().startswith("{")


def test_history_reaches_the_local_model_in_order(chat: LlamaCppChat) -> None:
    messages = [
        SYSTEM,
        ChatMessage("user", "My name is Ann."),
        ChatMessage("assistant", "Nice to meet you, Ann."),
        ChatMessage("user", "What is my name?"),
    ]
    prompt, _ = chat._prompt(messages)
    positions = [prompt.index(m.text) for m in messages]
    assert positions == sorted(positions)
    one_turn = asyncio.run(chat.count_tokens([SYSTEM, messages[-1]]))
    assert asyncio.run(chat.count_tokens(messages)) > one_turn + 10


@pytest.mark.parametrize(
    "message", ["we sell good shoes", "new coffee shop opening monday, come try our espresso"]
)
def test_enhance_answers_one_rewrite(chat: LlamaCppChat, message: str) -> None:
    request, words = enhance_request(message, "en", 30, None)
    text = asyncio.run(enhance(chat, request, words))
    sentences = [s.strip(" .!?").casefold() for s in re.split(r"[.!?]+\s", text) if s.strip()]
    assert text and len(sentences) == len(set(sentences)), text
    assert len(text.split()) <= 30
    assert "rewrite this message" not in text.casefold()
