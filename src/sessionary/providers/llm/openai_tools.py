"""Function tools in the two OpenAI wire shapes: chat completions and the Responses API.

Kept apart from openai.py, which only chooses the API and runs the request: this module turns
`ChatRequest.functions` / `tool_choice` / history calls into each API's fields, and each API's
calls (whole or streamed in pieces) back into `FunctionCall`s and `CallDelta`s.

An allowed subset of the functions (`ToolChoice.allowed`) is sent as the only tools, so an
upstream that knows nothing of `allowed_tools` still cannot call the others; one allowed function
with "required" is sent as the named choice. A tool's `strict` None is sent as false: the
Responses API would otherwise take it as true and refuse schemas that are not strict-ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionary.providers.base import (
    CallDelta,
    ChatMessage,
    ChatRequest,
    FunctionCall,
    FunctionTool,
)
from sessionary.providers.json_post import storable
from sessionary.providers.llm.functions import callable_functions, new_call_id

# Sampling options the Responses API has no field for: a request that carries them is sent as
# a chat completion instead (see OpenAIChat._use_chat_for).
CHAT_ONLY_OPTIONS = ("stop", "seed", "presence_penalty", "frequency_penalty")


def chat_only_options(request: ChatRequest) -> list[str]:
    """The options this request sets that only chat completions can carry."""
    return [
        name
        for name in CHAT_ONLY_OPTIONS
        if getattr(request, name) not in (None, ())  # stop is a tuple, the rest numbers
    ]


def _offered(request: ChatRequest) -> tuple[tuple[FunctionTool, ...], Any]:
    """The functions to send and the tool_choice naming them (None: send no tools at all)."""
    choice = request.tool_choice
    functions = callable_functions(request)  # a choice naming unknown functions: 400 here
    if not request.functions:
        return (), None
    if choice.mode == "none":
        return request.functions, "none"  # shown, not callable
    if choice.mode == "required" and choice.allowed is not None and len(functions) == 1:
        return functions, ("named", functions[0].name)
    return functions, choice.mode


# Chat completions


def chat_tools(request: ChatRequest) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls` for a chat-completions body."""
    functions, choice = _offered(request)
    if not functions:
        return {}
    tools = [
        {
            "type": "function",
            "function": {
                "name": f.name,
                **({"description": f.description} if f.description else {}),
                "parameters": f.parameters or {"type": "object", "properties": {}},
                "strict": bool(f.strict),
            },
        }
        for f in functions
    ]
    if isinstance(choice, tuple):
        choice = {"type": "function", "function": {"name": choice[1]}}
    return {
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": request.parallel_tool_calls,
    }


def chat_message(message: ChatMessage, content: Any) -> dict[str, Any]:
    """One chat-completions message; `content` is its text or parts, already shaped."""
    role = "system" if message.role == "developer" else message.role
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.call_id or "", "content": message.text}
    shaped: dict[str, Any] = {"role": role, "content": content}
    if message.calls:
        shaped["content"] = content or None
        shaped["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.calls
        ]
    return shaped


@dataclass
class StreamedCalls:
    """Calls arriving in pieces: upstream keys (index or item id) to our indexes, in order."""

    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    arguments: list[list[str]] = field(default_factory=list)
    keys: dict[Any, int] = field(default_factory=dict)

    def start(self, key: Any, call_id: str | None, name: str) -> CallDelta:
        index = len(self.ids)
        self.keys[key] = index
        self.ids.append(storable(call_id) if call_id else new_call_id())
        self.names.append(storable(name))
        self.arguments.append([])
        return CallDelta(index, "", self.ids[index], self.names[index])

    def add(self, key: Any, piece: str) -> CallDelta | None:
        index = self.keys.get(key)
        if index is None or not piece:
            return None
        self.arguments[index].append(storable(piece))
        return CallDelta(index, self.arguments[index][-1])

    def started(self, key: Any) -> bool:
        return key in self.keys

    def has_arguments(self, key: Any) -> bool:
        return bool(self.arguments[self.keys[key]])

    def calls(self) -> tuple[FunctionCall, ...]:
        return tuple(
            FunctionCall(call_id, name, "".join(parts))
            for call_id, name, parts in zip(self.ids, self.names, self.arguments, strict=True)
        )


def chat_call_deltas(streamed: StreamedCalls, deltas: Sequence[Any] | None) -> list[CallDelta]:
    """`choices[0].delta.tool_calls` of one chunk as our deltas (the first names the call)."""
    events: list[CallDelta] = []
    for delta in deltas or ():
        function = getattr(delta, "function", None)
        key = delta.index
        if not streamed.started(key):
            name = (function.name if function else None) or ""
            events.append(streamed.start(key, delta.id, name))
        piece = streamed.add(key, (function.arguments if function else None) or "")
        if piece is not None:
            events.append(piece)
    return events


# The Responses API


def responses_tools(request: ChatRequest) -> dict[str, Any]:
    """`tools` (hosted ones too), `tool_choice` and `parallel_tool_calls` for a Responses body."""
    functions, choice = _offered(request)
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "name": f.name,
            **({"description": f.description} if f.description else {}),
            "parameters": f.parameters or {"type": "object", "properties": {}},
            "strict": bool(f.strict),
        }
        for f in functions
    ]
    tools += list(request.tools)
    if not tools:
        return {}
    shaped: dict[str, Any] = {"tools": tools}
    if functions:
        if isinstance(choice, tuple):
            choice = {"type": "function", "name": choice[1]}
        shaped["tool_choice"] = choice
        shaped["parallel_tool_calls"] = request.parallel_tool_calls
    return shaped


def responses_items(message: ChatMessage, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A message as Responses input items: a call's output, or a message then its calls."""
    if message.role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message.call_id or "",
                "output": message.text,
            }
        ]
    items: list[dict[str, Any]] = []
    if message.text or message.images or not message.calls:
        items.append({"role": message.role, "content": parts})
    items += [
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        }
        for call in message.calls
    ]
    return items


def responses_calls_of(output: Sequence[dict[str, Any]]) -> tuple[FunctionCall, ...]:
    """The `function_call` output items of a response (plain JSON) as calls."""
    return tuple(
        FunctionCall(
            str(item.get("call_id") or new_call_id()),
            str(item.get("name") or ""),
            item.get("arguments") or "",
        )
        for item in output
        if item.get("type") == "function_call"
    )


def chat_calls_of(tool_calls: Sequence[Any] | None) -> tuple[FunctionCall, ...]:
    """`message.tool_calls` of a chat completion (plain JSON) as calls."""
    calls: list[FunctionCall] = []
    for call in tool_calls or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):  # a custom (non-function) tool call: not ours to run
            continue
        calls.append(
            FunctionCall(
                str(call.get("id") or new_call_id()),
                str(function.get("name") or ""),
                function.get("arguments") or "",
            )
        )
    return tuple(calls)


def responses_call_deltas(streamed: StreamedCalls, event: Any) -> list[CallDelta]:
    """One Responses stream event as our deltas (none for events about other things)."""
    kind = event.type
    if kind == "response.output_item.added" and event.item.type == "function_call":
        item = event.item
        first = streamed.start(item.id or event.output_index, item.call_id, item.name)
        rest = streamed.add(item.id or event.output_index, item.arguments or "")
        return [first] if rest is None else [first, rest]
    if kind == "response.function_call_arguments.delta":
        delta = streamed.add(event.item_id, event.delta)
        return [] if delta is None else [delta]
    # A server that sends the arguments only whole: they arrive with the "done" event.
    if (
        kind == "response.function_call_arguments.done"
        and streamed.started(event.item_id)
        and not streamed.has_arguments(event.item_id)
    ):
        whole = streamed.add(event.item_id, event.arguments)
        return [] if whole is None else [whole]
    return []
