"""Streamed turns: server-sent events as typed `ResponseEvent`s, and the final response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from sessionary.client.errors import SessionaryError
from sessionary.client.models import Response, ResponseEvent

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def to_event(sse: ServerSentEvent) -> ResponseEvent:
    try:
        payload: dict[str, Any] = json.loads(sse.data)
    except ValueError as exc:
        raise SessionaryError(f"Malformed event from the server: {sse.data[:200]!r}") from exc
    payload.setdefault("type", sse.event)
    return ResponseEvent.model_validate(payload)


class _Collector:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.final: Response | None = None
        self.text_parts: list[str] = []

    def see(self, event: ResponseEvent) -> ResponseEvent:
        if event.type == "response.output_text.delta" and event.delta:
            self.text_parts.append(event.delta)
        if event.type in FINAL_EVENTS and event.response is not None:
            self.final = event.response
        return event

    def result(self) -> Response:
        if self.final is None:
            raise SessionaryError("The stream ended before the final response.")
        return self.final


class Stream:
    """Iterate for events; `final_response()` consumes the rest and returns the response."""

    def __init__(
        self, response: httpx.Response, events: Iterator[ServerSentEvent], close: Callable[[], None]
    ) -> None:
        self._collector = _Collector(response)
        self._events = events
        self._close = close

    @property
    def response(self) -> httpx.Response:
        return self._collector.response

    def __iter__(self) -> Iterator[ResponseEvent]:
        try:
            for sse in self._events:
                yield self._collector.see(to_event(sse))
        finally:
            self.close()

    def text_deltas(self) -> Iterator[str]:
        for event in self:
            if event.type == "response.output_text.delta" and event.delta:
                yield event.delta

    def final_response(self) -> Response:
        for _ in self:
            pass
        return self._collector.result()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncStream:
    """The async twin of `Stream`: `async for`, and `await final_response()`."""

    def __init__(
        self,
        response: httpx.Response,
        events: AsyncIterator[ServerSentEvent],
        close: Callable[[], Any],
    ) -> None:
        self._collector = _Collector(response)
        self._events = events
        self._close = close

    @property
    def response(self) -> httpx.Response:
        return self._collector.response

    async def __aiter__(self) -> AsyncIterator[ResponseEvent]:
        try:
            async for sse in self._events:
                yield self._collector.see(to_event(sse))
        finally:
            await self.close()

    async def text_deltas(self) -> AsyncIterator[str]:
        async for event in self:
            if event.type == "response.output_text.delta" and event.delta:
                yield event.delta

    async def final_response(self) -> Response:
        async for _ in self:
            pass
        return self._collector.result()

    async def close(self) -> None:
        await self._close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
