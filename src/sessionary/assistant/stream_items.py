"""The output items of a streamed answer, as Responses events: a message and function calls.

The message opens at its first text (an answer that is only calls has none); each call opens at
its first piece. Items close at the end of the answer in output order, from the final result (the
provider's last word on the text and the arguments). Calls beyond what the turn allows
(`tool_choice: "none"`, `max_tool_calls`, `parallel_tool_calls: false`) are never shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sessionary.assistant.payloads import function_call_item, message_item
from sessionary.assistant.turns import Turn
from sessionary.kit.ids import new_id
from sessionary.providers.base import CallDelta, ChatResult, FunctionCall


class EventWriter:
    """Numbers the events: every event has a strictly increasing `sequence_number`."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class StreamedOutput:
    def __init__(self, event: EventWriter, turn: Turn) -> None:
        self.event = event
        self.turn = turn
        self.count = 0  # output indexes handed out
        self.message: tuple[int, str] | None = None  # (output_index, item_id)
        self.calls: dict[int, _Call] = {}
        self.dropped: set[int] = set()
        self.finished: dict[int, dict[str, Any]] = {}
        self.image_count = 0

    @property
    def items(self) -> list[dict[str, Any]]:
        return [self.finished[i] for i in sorted(self.finished)]

    @property
    def _limit(self) -> int | None:
        if self.turn.tools.choice.mode == "none":
            return 0
        return self.turn.tools.max_calls

    def _open_message(self) -> Iterator[bytes]:
        index, item_id = self.count, new_id("msg")
        self.count += 1
        self.message = (index, item_id)
        yield self.event(
            "response.output_item.added",
            output_index=index,
            item={**message_item(item_id, "", "in_progress"), "content": []},
        )
        yield self.event(
            "response.content_part.added",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=_part(""),
        )

    def text(self, delta: str) -> Iterator[bytes]:
        if self.message is None:
            yield from self._open_message()
        assert self.message is not None
        index, item_id = self.message
        yield self.event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _open_call(self, call_id: str, name: str) -> _Call:
        call = _Call(self.count, new_id("fc"), call_id, name)
        self.count += 1
        return call

    def call(self, delta: CallDelta) -> Iterator[bytes]:
        if delta.index in self.dropped:
            return
        call = self.calls.get(delta.index)
        if call is None:
            limit = self._limit
            if (limit is not None and len(self.calls) >= limit) or not delta.name:
                self.dropped.add(delta.index)
                return
            call = self._open_call(delta.call_id or new_id("call"), delta.name)
            self.calls[delta.index] = call
            yield self._added(call)
        if delta.arguments:
            call.arguments.append(delta.arguments)
            yield self._delta(call, delta.arguments)

    def _added(self, call: _Call) -> bytes:
        item = function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
        return self.event("response.output_item.added", output_index=call.output_index, item=item)

    def _delta(self, call: _Call, arguments: str) -> bytes:
        return self.event(
            "response.function_call_arguments.delta",
            item_id=call.item_id,
            output_index=call.output_index,
            delta=arguments,
        )

    def images(self, result: ChatResult) -> Iterator[bytes]:
        """An image the upstream's model chose to make (at most the one the hold covers)."""
        for made in [i for i in result.items if i.get("type") == "image_generation_call"][:1]:
            index = self.count
            self.count += 1
            item = {**made, "id": made.get("id") or new_id("ig"), "status": "completed"}
            placeholder = {**item, "status": "in_progress", "result": None}
            yield self.event("response.output_item.added", output_index=index, item=placeholder)
            for stage in ("in_progress", "generating", "completed"):
                yield self.event(
                    f"response.image_generation_call.{stage}",
                    output_index=index,
                    item_id=item["id"],
                )
            yield self.event("response.output_item.done", output_index=index, item=item)
            self.finished[index] = item
            self.image_count += 1

    def finish(self, result: ChatResult) -> Iterator[bytes]:
        """Close every item; open those the provider gave only in its final result."""
        yield from self.images(result)
        streamed = [self.calls[i] for i in sorted(self.calls)]
        final = list(result.calls) or [
            FunctionCall(c.call_id, c.name, "".join(c.arguments)) for c in streamed
        ]
        limit = self._limit
        final = final[:limit] if limit is not None else final
        if self.message is None and (result.text or not (final or self.image_count)):
            yield from self._open_message()
            if result.text:
                yield from self.text(result.text)
        if self.message is not None:
            yield from self._close_message(result.text)
        for position, made in enumerate(final):
            if position < len(streamed):
                call = streamed[position]
            else:
                call = self._open_call(made.call_id, made.name)
                yield self._added(call)
                if made.arguments:
                    yield self._delta(call, made.arguments)
            item = function_call_item(call.item_id, call.call_id, call.name, made.arguments)
            yield self.event(
                "response.function_call_arguments.done",
                item_id=call.item_id,
                output_index=call.output_index,
                arguments=made.arguments,
            )
            yield self.event("response.output_item.done", output_index=call.output_index, item=item)
            self.finished[call.output_index] = item
        # Calls announced but absent from the final result were seen: close them as they came.
        for call in streamed[len(final) :]:
            arguments = "".join(call.arguments)
            item = function_call_item(call.item_id, call.call_id, call.name, arguments)
            yield self.event(
                "response.function_call_arguments.done",
                item_id=call.item_id,
                output_index=call.output_index,
                arguments=arguments,
            )
            yield self.event("response.output_item.done", output_index=call.output_index, item=item)
            self.finished[call.output_index] = item

    def _close_message(self, text: str) -> Iterator[bytes]:
        assert self.message is not None
        index, item_id = self.message
        yield self.event(
            "response.output_text.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=[],
        )
        yield self.event(
            "response.content_part.done",
            item_id=item_id,
            output_index=index,
            content_index=0,
            part=_part(text),
        )
        item = message_item(item_id, text)
        yield self.event("response.output_item.done", output_index=index, item=item)
        self.finished[index] = item


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
