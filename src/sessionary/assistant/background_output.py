"""What a background turn has shown so far, read from its own events.

A stopped turn (cancelled, or its server stopping) ends with the output it had produced: the
items already done as they were, a message cut short as `incomplete` with its text so far. The
deltas seen are the ones the stop charged for (`produced_tokens` counts them the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sessionary.assistant.payloads import message_item
from sessionary.conversations.background import TERMINAL_EVENTS

DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")


@dataclass
class SeenOutput:
    produced: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None  # the response of the terminal event, if one came
    _open: dict[int, dict[str, Any]] = field(default_factory=dict)
    _text: dict[int, list[str]] = field(default_factory=dict)
    _done: dict[int, dict[str, Any]] = field(default_factory=dict)

    def note(self, kind: str, data: dict[str, Any]) -> None:
        if kind in DELTAS:
            self.produced.append(data["delta"])
            if kind == "response.output_text.delta":
                self._text.setdefault(data["output_index"], []).append(data["delta"])
        elif kind == "response.output_item.added":
            self._open[data["output_index"]] = data["item"]
        elif kind == "response.output_item.done":
            self._done[data["output_index"]] = data["item"]
        elif kind in TERMINAL_EVENTS:
            self.final = data["response"]

    def output(self) -> list[dict[str, Any]]:
        """Done items as they were; a message cut short, as far as it went."""
        items: list[dict[str, Any]] = []
        for index in sorted(self._open.keys() | self._done.keys()):
            if index in self._done:
                items.append(self._done[index])
            elif self._open[index].get("type") == "message":
                text = "".join(self._text.get(index, []))
                items.append(message_item(self._open[index]["id"], text, "incomplete"))
        return items
