"""A chat model that answers from a script (function calls, text or a failure), in-process.

It keeps the real model's name, context window and tokenizer, so fitting and pricing are the
real ones; only the answer is scripted. Streams cut the answer into pieces as a provider would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI

from sessionary.kit.errors import UpstreamError
from sessionary.providers.base import (
    CallDelta,
    ChatMessage,
    ChatModel,
    ChatRequest,
    ChatResult,
    FunctionCall,
    StreamDone,
    StreamEvent,
    TextDelta,
    Usage,
)


class ScriptedChat:
    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.context_window = inner.context_window
        self.supports_vision = inner.supports_vision
        self.requests: list[ChatRequest] = []
        self.text = ""
        self.calls: list[FunctionCall] = []
        self.fail_after: int | None = None  # pieces streamed before the model fails
        self.items: list[dict[str, Any]] = []  # hosted tools' items (an image it chose to make)

    def script(self, text: str = "", calls: Sequence[FunctionCall] = ()) -> None:
        self.text, self.calls = text, list(calls)

    async def _result(self, request: ChatRequest) -> ChatResult:
        tokens = await self.inner.count_tokens(request.messages)
        calls = tuple(self.calls) if request.functions else ()
        output = len(self.text.split()) + sum(len(c.arguments) for c in calls)
        return ChatResult(
            self.text,
            Usage(tokens, max(1, output)),
            "tool_calls" if calls else "stop",
            self.name,
            calls=calls,
            items=tuple(self.items) if request.tools else (),
        )

    async def generate(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        if self.fail_after is not None:
            raise UpstreamError("The scripted model failed.")
        return await self._result(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        result = await self._result(request)
        pieces: list[StreamEvent] = [TextDelta(w) for w in _cut(result.text)]
        for index, call in enumerate(result.calls):
            halves = _cut(call.arguments) or [""]
            pieces.append(CallDelta(index, halves[0], call.call_id, call.name))
            pieces += [CallDelta(index, h) for h in halves[1:]]
        for count, piece in enumerate(pieces):
            if self.fail_after is not None and count >= self.fail_after:
                raise UpstreamError("The scripted model failed mid-stream.")
            yield piece
        yield StreamDone(result)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return await self.inner.count_tokens(messages)


def _cut(text: str) -> list[str]:
    half = len(text) // 2
    return [p for p in (text[:half], text[half:]) if p]


def script_chat(app: FastAPI) -> ScriptedChat:
    """Swap the app's chat model for a scripted one (the real one's tokenizer kept)."""
    scripted = ScriptedChat(app.state.providers.chat())
    app.state.providers = dataclasses.replace(app.state.providers, llm=scripted)
    return scripted
