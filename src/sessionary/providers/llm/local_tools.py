"""Function tools for a local model that was never trained on them: all of it is prompt text.

A GGUF's chat template may know nothing of tools or of a "tool" role, so everything is rendered
as plain messages any template takes:

- the offered functions go into the system message, as JSON, with the one format to call them:
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
- an assistant message that made calls is its text followed by its calls in that format;
- a function's output ("tool" message) is a user message, `<tool_response name="...">` around
  the output, consecutive outputs in one message.

With tool_choice "auto" the model answers freely and `CallScanner` picks well-formed calls of
offered functions out of its text (anything else stays text). A required call is not left to the
model: local.py writes the `<tool_call>` opening itself and a grammar makes the rest a call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionary.providers.base import ChatMessage, FunctionCall, FunctionTool
from sessionary.providers.llm.functions import new_call_id

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def tools_text(functions: Sequence[FunctionTool], *, required: bool) -> str:
    listed = "\n".join(
        json.dumps(
            {
                "name": f.name,
                **({"description": f.description} if f.description else {}),
                "parameters": f.parameters,
            }
        )
        for f in functions
    )
    how = (
        "Answer with a call of one of them"
        if required
        else "To call one, answer with only the call; otherwise answer normally"
    )
    return (
        f"You can call these functions:\n{listed}\n{how}, in this format:\n"
        f'{OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CLOSE}'
    )


def call_text(call: FunctionCall) -> str:
    arguments = call.arguments.strip() or "{}"
    return f'{OPEN}{{"name": {json.dumps(call.name)}, "arguments": {arguments}}}{CLOSE}'


def render_messages(
    messages: Sequence[ChatMessage], functions: Sequence[FunctionTool], *, required: bool = False
) -> list[dict[str, str]]:
    """The messages as role/content pairs any chat template takes (see the module's text)."""
    names = {call.call_id: call.name for m in messages for call in m.calls}
    rendered: list[dict[str, str]] = []
    after_output = False  # the last message rendered holds function outputs
    for m in messages:
        if m.role == "tool":
            name = names.get(m.call_id or "", "function")
            output = f'<tool_response name="{name}">\n{m.text}\n</tool_response>'
            if after_output:
                rendered[-1]["content"] += "\n" + output
            else:
                rendered.append({"role": "user", "content": output})
            after_output = True
            continue
        after_output = False
        content = m.text
        if m.calls:
            content = "\n".join([*([m.text] if m.text else []), *map(call_text, m.calls)])
        role = "system" if m.role == "developer" else m.role
        rendered.append({"role": role, "content": content})
    if functions:
        listing = tools_text(functions, required=required)
        if rendered and rendered[0]["role"] == "system":
            rendered[0]["content"] += "\n\n" + listing
        else:
            rendered.insert(0, {"role": "system", "content": listing})
    return rendered


def parse_call(body: str, names: set[str]) -> FunctionCall | None:
    """The call written between the tags, when it is JSON naming an offered function."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return FunctionCall(new_call_id(), str(value["name"]), json.dumps(arguments))


@dataclass
class CallScanner:
    """Fed a free answer piece by piece: releases its text, keeps back what may be a call.

    Text that could be the start of `<tool_call>` is held until it is or is not; a call is held
    until `</tool_call>` (or the end), then becomes a call if it parses, else text again.
    """

    names: set[str]
    calls: list[FunctionCall] = field(default_factory=list)
    held: str = ""

    def feed(self, piece: str) -> tuple[str, list[FunctionCall]]:
        self.held += piece
        released: list[str] = []
        made: list[FunctionCall] = []
        while self.held:
            start = self.held.find(OPEN)
            if start < 0:
                keep = _partial_suffix(self.held, OPEN)
                released.append(self.held[: len(self.held) - keep])
                self.held = self.held[len(self.held) - keep :]
                break
            released.append(self.held[:start])
            self.held = self.held[start:]
            end = self.held.find(CLOSE)
            if end < 0:
                break  # a call being written
            block = self.held[: end + len(CLOSE)]
            self.held = self.held[end + len(CLOSE) :]
            call = parse_call(block[len(OPEN) : -len(CLOSE)], self.names)
            if call is None:
                released.append(block)
            else:
                made.append(call)
        self.calls += made
        return "".join(released), made

    def finish(self) -> tuple[str, list[FunctionCall]]:
        """The answer ended: a call left open still counts if what was written parses."""
        rest, self.held = self.held, ""
        if rest.startswith(OPEN):
            call = parse_call(rest[len(OPEN) :], self.names)
            if call is not None:
                self.calls.append(call)
                return "", [call]
        return rest, []


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of `text` could begin `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class TrimmedPieces:
    """Passes streamed pieces on without the whitespace around the whole (held until more
    text follows it), so the pieces add up to the stripped arguments."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send
        self.held = ""
        self.started = False

    def __call__(self, piece: str) -> None:
        text = self.held + piece
        if not self.started:
            text = text.lstrip()
        body = text.rstrip()
        self.held = text[len(body) :]
        if body:
            self.started = True
            self.send(body)


def arguments_schema(function: FunctionTool) -> dict[str, Any]:
    """The grammar's schema for a function's arguments: always an object."""
    schema = dict(function.parameters or {})
    schema.setdefault("type", "object")
    return schema
