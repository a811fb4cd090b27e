"""A chat completions request turned into what the provider reads, or a 400 naming the field.

Messages become `ChatMessage`s (assistant `tool_calls` become `calls`, a `tool` message the output
of the call it names) and `NewMessage`s for a stored completion; tools, tool_choice, stop and
response_format become the provider contract's values. Every check runs before any credit is held.
A user message's `file` parts (PDF or text, inline) are read as text by files.py; a stored
completion keeps them as `input_file` parts holding that text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from sessionary.assistant.chat_schemas import ChatCompletionRequest
from sessionary.assistant.files import FileReader
from sessionary.assistant.inputs import MAX_TEXT_CHARS, text_of
from sessionary.conversations.service import NewMessage
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.json_schema import check_schema
from sessionary.kit.metadata import check_metadata
from sessionary.providers.base import ChatMessage, FunctionCall, FunctionTool, ImagePart, ToolChoice
from sessionary.settings.files import FileInputSettings

ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_STOPS = 4
MAX_STOP_CHARS = 256
SERVICE_TIERS = (None, "auto", "default")


@dataclass
class ChatInputs:
    """What the provider gets and what a stored completion records, all checked."""

    messages: list[ChatMessage]
    records: list[NewMessage]
    functions: tuple[FunctionTool, ...]
    tool_choice: ToolChoice
    json_schema: dict[str, Any] | None
    stop: tuple[str, ...]
    max_output_tokens: int | None
    include_usage: bool


def _bad(message: str, param: str, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Parameters that cannot be honoured here: a 400 naming each, never silently dropped."""
    if body.n not in (None, 1):
        raise _bad("Only n=1 is supported: one choice per request.", "n", "unsupported_parameter")
    if body.logprobs or body.top_logprobs is not None:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise _bad("Log probabilities are not available here.", param, "unsupported_parameter")
    if body.modalities not in (None, ["text"]):
        raise _bad("Only the text modality is available.", "modalities", "unsupported_parameter")
    if body.logit_bias:
        raise _bad("logit_bias is not supported.", "logit_bias", "unsupported_parameter")
    if body.service_tier not in SERVICE_TIERS:
        raise _bad(
            "service_tier may be 'auto' or 'default' here.", "service_tier", "unsupported_parameter"
        )
    if body.functions is not None or body.function_call is not None:
        param = "functions" if body.functions is not None else "function_call"
        raise _bad(
            f"'{param}' is the deprecated form of tools: use 'tools' and 'tool_choice'.",
            param,
            "unsupported_parameter",
        )
    for name in (
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "moderation",
        "prompt_cache_retention",
        "prompt_cache_options",
    ):
        if getattr(body, name) is not None:
            raise _bad(f"'{name}' is not supported by this server.", name, "unsupported_parameter")
    if body.metadata is not None and not body.store:
        raise _bad("metadata is kept only with store: true.", "metadata")
    check_metadata(body.metadata)


def _text_parts(
    content: Any, param: str, *, files: FileReader | None
) -> tuple[str, list[ImagePart], list[dict[str, Any]]]:
    """The text (parts joined by newlines, files' text wrapped in their names), the images, and
    the parts in the Responses shape when there are files (else []). `files` None: text only."""
    if isinstance(content, str):
        return content, [], []
    if not isinstance(content, list) or not content:
        raise _bad("Message content must be a string or a non-empty list of parts.", param)
    parts: list[dict[str, Any]] = []
    images: list[ImagePart] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad("A text part needs a 'text' string.", f"{where}.text")
            parts.append({"type": "input_text", "text": part["text"]})
        elif kind == "image_url" and files is not None:
            images.append(_image(part, where))
            parts.append({"type": "input_image", "image_url": images[-1].url})
        elif kind == "file" and files is not None:
            if not isinstance(part.get("file"), dict):
                raise _bad(
                    "A file part needs a 'file' object with file_data and filename.",
                    f"{where}.file",
                    "invalid_file",
                )
            parts.append(files.read(part["file"], f"{where}.file"))
        else:
            allowed = "text, image_url or file" if files is not None else "text"
            raise _bad(
                f"Unsupported content part type {kind!r} here (use {allowed}).", f"{where}.type"
            )
    with_files = any(p["type"] == "input_file" for p in parts)
    return text_of(parts), images, parts if with_files else []


def _image(part: dict[str, Any], param: str) -> ImagePart:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
        raise _bad(
            "An image_url part needs image_url.url: an http(s) URL or a data:image/... URL.",
            f"{param}.image_url.url",
        )
    detail = value.get("detail") if isinstance(value, dict) else None
    if detail not in (None, "auto", "low", "high"):
        raise _bad("image_url.detail is auto, low or high.", f"{param}.image_url.detail")
    return ImagePart(url, detail)


def _calls(raw: Any, param: str) -> tuple[FunctionCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("tool_calls must be a list.", param)
    calls: list[FunctionCall] = []
    for index, call in enumerate(raw):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _bad("A tool call must be {'type': 'function', 'id', 'function'}.", where)
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise _bad("A tool call needs an 'id' string.", f"{where}.id")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad("A tool call needs function.name.", f"{where}.function.name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise _bad("function.arguments is a JSON string.", f"{where}.function.arguments")
        calls.append(FunctionCall(call["id"], function["name"], arguments))
    return tuple(calls)


def record_parts(message: ChatMessage) -> list[dict[str, Any]]:
    """A message as stored on a session, in the Responses shape."""
    if message.role == "tool":
        return [
            {"type": "function_call_output", "call_id": message.call_id, "output": message.text}
        ]
    kind = "output_text" if message.role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = [{"type": kind, "text": message.text}] if message.text else []
    parts += [{"type": "input_image", "image_url": i.url} for i in message.images]
    parts += [
        {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
        for c in message.calls
    ]
    return parts


def parse_messages(
    raw: list[dict[str, Any]], files: FileReader
) -> tuple[list[ChatMessage], dict[int, list[dict[str, Any]]]]:
    """The conversation as the provider reads it (a tool output must answer an earlier call), and
    the stored parts of the messages that hold files, by index."""
    messages: list[ChatMessage] = []
    with_files: dict[int, list[dict[str, Any]]] = {}
    called: set[str] = set()
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        role = item.get("role")
        if role == "function":
            raise _bad("The 'function' role is deprecated: use 'tool'.", f"{param}.role")
        if role not in ROLES:
            raise _bad(f"Invalid role {role!r} (one of {', '.join(ROLES)}).", f"{param}.role")
        if item.get("name") is not None and not isinstance(item.get("name"), str):
            raise _bad("name must be a string.", f"{param}.name")
        for refused in ("audio", "function_call"):
            if item.get(refused) is not None:
                raise _bad(f"'{refused}' on a message is not supported.", f"{param}.{refused}")
        content = item.get("content")
        if role == "assistant":
            calls = _calls(item.get("tool_calls"), f"{param}.tool_calls")
            text = ""
            if content is not None:
                text = _assistant_text(content, f"{param}.content")
            elif not calls:
                raise _bad("An assistant message needs content or tool_calls.", f"{param}.content")
            called.update(c.call_id for c in calls)
            messages.append(ChatMessage("assistant", text, calls=calls))
            continue
        if content is None:
            raise _bad(f"Missing required parameter: '{param}.content'.", f"{param}.content")
        text, images, parts = _text_parts(
            content, f"{param}.content", files=files if role == "user" else None
        )
        if parts:
            with_files[index] = parts
        if role == "tool":
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in called:
                raise _bad(
                    f"tool_call_id {call_id!r} answers no tool call of an earlier assistant "
                    "message.",
                    f"{param}.tool_call_id",
                )
            messages.append(ChatMessage("tool", text, call_id=call_id))
        else:
            messages.append(ChatMessage(role, text, tuple(images)))
    if sum(len(m.text) + sum(len(c.arguments) for c in m.calls) for m in messages) > MAX_TEXT_CHARS:
        raise _bad(
            f"The messages (files' text included) exceed {MAX_TEXT_CHARS} characters.", "messages"
        )
    return messages, with_files


def _assistant_text(content: Any, param: str) -> str:
    if isinstance(content, list):  # an assistant's parts may be text or refusal
        content = [
            {"type": "text", "text": p.get("refusal")}
            if isinstance(p, dict) and p.get("type") == "refusal"
            else p
            for p in content
        ]
    text, _, _ = _text_parts(content, param, files=None)
    return text


def parse_tools(raw: list[dict[str, Any]] | None, scope: str) -> tuple[FunctionTool, ...]:
    tools: list[FunctionTool] = []
    for index, tool in enumerate(raw or []):
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(
                f"Unsupported tool type {kind!r}: only 'function' tools are available.",
                f"{param}.type",
                "unsupported_tool",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _bad("A function tool needs a 'function' object.", f"{param}.function")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _bad(
                "function.name must be 1-64 characters of a-z, A-Z, 0-9, _ and -.",
                f"{param}.function.name",
            )
        if any(t.name == name for t in tools):
            raise _bad(f"The function '{name}' is offered twice.", f"{param}.function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise _bad(
                "function.parameters must be a JSON Schema object ({'type': 'object', ...}).",
                f"{param}.function.parameters",
            )
        check_schema(parameters, f"{param}.function.parameters", scope=scope)
        description = function.get("description")
        strict = function.get("strict")
        if description is not None and not isinstance(description, str):
            raise _bad("function.description must be a string.", f"{param}.function.description")
        if strict is not None and not isinstance(strict, bool):
            raise _bad("function.strict must be a boolean.", f"{param}.function.strict")
        tools.append(FunctionTool(name, parameters, description, strict))
    return tuple(tools)


def parse_tool_choice(
    raw: str | dict[str, Any] | None, tools: tuple[FunctionTool, ...]
) -> ToolChoice:
    offered = {t.name for t in tools}
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise _bad("tool_choice is none, auto, required or a named function.", "tool_choice")
        if raw == "required" and not tools:
            raise _bad("tool_choice 'required' needs tools.", "tool_choice")
        mode: Literal["auto", "none", "required"] = raw  # type: ignore[assignment]
        return ToolChoice(mode)
    kind = raw.get("type")
    if kind == "function":
        name = (raw.get("function") or {}).get("name")
        if name not in offered:
            raise _bad(
                f"tool_choice names the function {name!r}, which tools do not offer.",
                "tool_choice.function.name",
            )
        return ToolChoice("required", (name,))
    if kind == "allowed_tools":
        allowed = raw.get("allowed_tools") or {}
        mode = allowed.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise _bad("allowed_tools.mode is auto or required.", "tool_choice.allowed_tools.mode")
        names: list[str] = []
        for index, tool in enumerate(allowed.get("tools") or []):
            name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
            if name not in offered:
                raise _bad(
                    f"allowed_tools names {name!r}, which tools do not offer.",
                    f"tool_choice.allowed_tools.tools[{index}]",
                )
            names.append(name)
        if not names:
            raise _bad("allowed_tools.tools names no function.", "tool_choice.allowed_tools.tools")
        return ToolChoice(mode, tuple(names))
    raise _bad(
        f"Unsupported tool_choice type {kind!r} (function or allowed_tools).", "tool_choice.type"
    )


def parse_response_format(raw: dict[str, Any] | None, scope: str) -> dict[str, Any] | None:
    """None for free text, {} for any JSON object, else the schema the answer must satisfy."""
    kind = (raw or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = (raw or {}).get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _bad(
                "response_format json_schema needs json_schema.name.",
                "response_format.json_schema.name",
            )
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise _bad(
                "json_schema.schema must be an object.", "response_format.json_schema.schema"
            )
        try:
            json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise _bad("json_schema.schema is not JSON.", "response_format.json_schema") from exc
        check_schema(schema, "response_format.json_schema.schema", scope=scope)
        return schema or {"type": "object"}
    raise _bad(
        f"Unsupported response_format type {kind!r} (text, json_object or json_schema).",
        "response_format.type",
    )


def parse_stop(raw: str | list[str] | None) -> tuple[str, ...]:
    stops = [raw] if isinstance(raw, str) else list(raw or [])
    if len(stops) > MAX_STOPS:
        raise _bad(f"At most {MAX_STOPS} stop sequences.", "stop")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise _bad(f"Stop sequences are 1 to {MAX_STOP_CHARS} characters.", "stop")
    return tuple(stops)


def _include_usage(options: dict[str, Any] | None, streamed: bool) -> bool:
    if options is None:
        return False
    if not streamed:
        raise _bad("stream_options is only allowed with stream: true.", "stream_options")
    for key, value in options.items():
        if key not in ("include_usage", "include_obfuscation"):
            raise _bad(f"Unknown stream option '{key}'.", f"stream_options.{key}")
        if not isinstance(value, bool):
            raise _bad(f"stream_options.{key} must be a boolean.", f"stream_options.{key}")
    return bool(options.get("include_usage"))


def parse_request(body: ChatCompletionRequest, files: FileInputSettings, scope: str) -> ChatInputs:
    """The request's inputs, every one checked (400 before any charge); `scope`: the caller's
    account (`kit/json_schema.check_schema`)."""
    refuse_unsupported(body)
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise _bad("Give max_completion_tokens or max_tokens, not both.", "max_tokens")
    messages, with_files = parse_messages(body.messages, FileReader(files, MAX_TEXT_CHARS))
    functions = parse_tools(body.tools, scope)
    return ChatInputs(
        messages=messages,
        records=[
            NewMessage(m.role, with_files.get(i) or record_parts(m), m.text)
            for i, m in enumerate(messages)
        ],
        functions=functions,
        tool_choice=parse_tool_choice(body.tool_choice, functions),
        json_schema=parse_response_format(body.response_format, scope),
        stop=parse_stop(body.stop),
        max_output_tokens=body.max_completion_tokens or body.max_tokens,
        include_usage=_include_usage(body.stream_options, bool(body.stream)),
    )
