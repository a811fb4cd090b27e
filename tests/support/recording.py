"""A real chat model that also remembers every request it received (to assert on model input)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI

from sessionary.providers.base import ChatMessage, ChatModel, ChatRequest, ChatResult, StreamEvent


class RecordingChat:
    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.requests: list[ChatRequest] = []
        self.name = inner.name
        self.context_window = inner.context_window
        self.supports_vision = inner.supports_vision

    async def generate(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        return await self.inner.generate(request)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        return self.inner.stream(request)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return await self.inner.count_tokens(messages)


def record_chat(app: FastAPI, **overrides: Any) -> RecordingChat:
    """Swap the app's chat model for a recording wrapper around it."""
    recorder = RecordingChat(app.state.providers.chat())
    for name, value in overrides.items():
        setattr(recorder, name, value)
    app.state.providers = dataclasses.replace(app.state.providers, llm=recorder)
    return recorder
