"""Every input form the two APIs accept, turned into messages.

A string; one message (`{"role", "content"}`, with or without `"type": "message"`); a list of
messages; or a bare content array (`input_text` / `input_image` parts) meaning one user message.
Content is a string or parts: `input_text` / `text` / `output_text`, and `input_image` /
`image_url` with a URL or a data URL. Images are passed on as given: the server never fetches them.
An `input_file` (a PDF or text file sent inline) is read here, in files.py, and stored as its text.

Function calling adds two item types: `function_call` (a call the model made, replayed by a client
that keeps its own history) and `function_call_output` (what the client's function returned). They
are stored as messages of role "assistant" and "tool" whose one part is the item itself, so the
history, `input_items` and the Threads and ChatKit faces can show them as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sessionary.assistant.files import FileReader, wrap
from sessionary.conversations.service import NewMessage
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.light import is_light as light
from sessionary.providers.base import ChatMessage, FunctionCall, ImagePart
from sessionary.settings.files import FileInputSettings

ROLES = {"user", "assistant", "system", "developer"}
TEXT_PARTS = {"input_text", "text", "output_text"}
IMAGE_PARTS = {"input_image", "image_url"}
FILE_PART = "input_file"
MAX_MESSAGES = 500
MAX_TEXT_CHARS = 200_000
TOOL_ITEMS = {"function_call", "function_call_output"}
MAX_CALL_ID = 128
# `is_light`: parts that keep a turn's plan and settle off the event loop.
HEAVY_PARTS = IMAGE_PARTS | {FILE_PART, "file", "input_audio"}


def is_light(request_parts: list[Any]) -> bool:
    """Whether a turn's input (with its tools and output schema) is a little plain text
    (`kit/light.py`): no file to decode, no image. Its plan and settle are then short
    enough to run on the event loop (`Database.in_worker(loop_ok=True)`; a long stored
    history still sends the plan to a worker: `ConversationService.history`)."""
    return light(request_parts, HEAVY_PARTS)


def _image_url(part: dict[str, Any], param: str) -> str:
    value = part.get("image_url")
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("An image part needs an 'image_url' (a URL or data URL).", param=param)
    if not (value.startswith(("https://", "http://")) or value.startswith("data:image/")):
        raise InvalidRequest(
            "An image must be an http(s) URL or a data:image/... URL.", param=param
        )
    return value


def _parts(content: Any, role: str, param: str, files: FileReader) -> list[dict[str, Any]]:
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        return [{"type": kind, "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest("Message content must be a string or a list of parts.", param=param)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if isinstance(part, str):
            parts.append({"type": "input_text", "text": part})
            continue
        if not isinstance(part, dict):
            raise InvalidRequest("A content part must be an object.", param=where)
        part_type = part.get("type")
        if part_type in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise InvalidRequest("A text part needs a 'text' string.", param=where)
            out_kind = "output_text" if role == "assistant" else "input_text"
            parts.append({"type": out_kind, "text": part["text"]})
        elif part_type in IMAGE_PARTS:
            image: dict[str, Any] = {"type": "input_image", "image_url": _image_url(part, where)}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append(image)
        elif part_type == FILE_PART:
            if role == "assistant":
                raise InvalidRequest("An assistant message holds no files.", param=where)
            parts.append(files.read(part, where))
        else:
            raise InvalidRequest(
                f"Unsupported content part type '{part_type}' "
                "(use input_text, input_image or input_file).",
                param=where,
            )
    return parts


def text_of(parts: list[dict[str, Any]]) -> str:
    """The text the model reads: text parts as they are, a file's text wrapped in its name."""
    return "\n".join(
        wrap(p["filename"], p["text"]) if p["type"] == FILE_PART else p["text"]
        for p in parts
        if "text" in p
    )


def _string(raw: dict[str, Any], key: str, param: str, limit: int | None = None) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or (limit is not None and not 0 < len(value) <= limit):
        size = f" of 1 to {limit} characters" if limit else ""
        raise InvalidRequest(f"'{key}' must be a string{size}.", param=f"{param}.{key}")
    return value


def _call_item(raw: dict[str, Any], param: str) -> NewMessage:
    """A replayed `function_call`: stored as the assistant's, its one part the item."""
    call_id = _string(raw, "call_id", param, MAX_CALL_ID)
    name = _string(raw, "name", param, 64)
    arguments = _string(raw, "arguments", param)
    item = {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    if isinstance(raw.get("id"), str):
        item["id"] = raw["id"]
    return NewMessage("assistant", [item], f"{name}({arguments})")


def _output_item(raw: dict[str, Any], param: str, files: FileReader) -> NewMessage:
    """A `function_call_output`: the output a string, or text (and image) parts."""
    call_id = _string(raw, "call_id", param, MAX_CALL_ID)
    output = raw.get("output")
    if isinstance(output, str):
        text = output
    elif isinstance(output, list) and output:
        parts = _parts(output, "user", f"{param}.output", files)
        output, text = parts, text_of(parts)
    else:
        raise InvalidRequest(
            "'output' must be a string or a non-empty list of content parts.",
            param=f"{param}.output",
        )
    return NewMessage(
        "tool", [{"type": "function_call_output", "call_id": call_id, "output": output}], text
    )


def _message(raw: Any, param: str, files: FileReader) -> NewMessage:
    if isinstance(raw, str):
        return NewMessage("user", [{"type": "input_text", "text": raw}], raw)
    if not isinstance(raw, dict):
        raise InvalidRequest("Each input message must be an object or a string.", param=param)
    if raw.get("type") == "function_call":
        return _call_item(raw, param)
    if raw.get("type") == "function_call_output":
        return _output_item(raw, param, files)
    if raw.get("type") not in (None, "message"):
        raise InvalidRequest(
            f"Unsupported input item type '{raw.get('type')}'.", param=f"{param}.type"
        )
    role = raw.get("role", "user")
    if role not in ROLES:
        raise InvalidRequest(
            f"Invalid role '{role}' (user, assistant, system or developer).", param=f"{param}.role"
        )
    parts = _parts(raw.get("content"), role, f"{param}.content", files)
    return NewMessage(role, parts, text_of(parts))


def normalise_input(
    raw: Any, *, files: FileInputSettings, param: str = "input"
) -> list[NewMessage]:
    """The turn's new messages; [] when there is no input (the session history answers)."""
    if raw is None or raw == "" or raw == []:
        return []
    reader = FileReader(files, MAX_TEXT_CHARS)
    if isinstance(raw, (str, dict)):
        messages = [_message(raw, param, reader)]
    elif isinstance(raw, list):
        content_parts = TEXT_PARTS | IMAGE_PARTS | {FILE_PART}
        if all(isinstance(p, dict) and _kind(p) in content_parts for p in raw):
            parts = _parts(raw, "user", param, reader)
            messages = [NewMessage("user", parts, text_of(parts))]
        else:
            if len(raw) > MAX_MESSAGES:
                raise InvalidRequest(f"At most {MAX_MESSAGES} input messages.", param=param)
            messages = [_message(item, f"{param}[{i}]", reader) for i, item in enumerate(raw)]
    else:
        raise InvalidRequest(
            "input must be a string, a message, a list of messages or a content array.",
            param=param,
        )
    if sum(len(m.text) for m in messages) > MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"The input text (files' text included) exceeds {MAX_TEXT_CHARS} characters.",
            param=param,
        )
    return messages


def _kind(item: dict[str, Any]) -> str | None:
    """An item's "type" when it is a string (a client may send any JSON value there)."""
    kind = item.get("type")
    return kind if isinstance(kind, str) else None


def tool_item(message: NewMessage) -> dict[str, Any] | None:
    """The function_call or function_call_output item a message holds, if it is one."""
    if len(message.parts) == 1 and message.parts[0].get("type") in TOOL_ITEMS:
        return message.parts[0]
    return None


def images_of(message: NewMessage) -> tuple[ImagePart, ...]:
    parts = message.parts
    item = tool_item(message)
    if item is not None:
        output = item.get("output")
        parts = output if isinstance(output, list) else []
    return tuple(
        ImagePart(p["image_url"], p.get("detail")) for p in parts if p["type"] == "input_image"
    )


def to_chat(message: NewMessage, *, with_images: bool) -> ChatMessage:
    role = message.role if message.role in ROLES else "user"
    return ChatMessage(
        role,  # type: ignore[arg-type]
        message.text,
        images_of(message) if with_images else (),
    )


def to_chat_messages(messages: Sequence[NewMessage], *, with_images: bool) -> list[ChatMessage]:
    """Messages as the model reads them: a call joins the assistant message right before it (one
    assistant turn may call several functions), an output is a "tool" message naming its call."""
    chat: list[ChatMessage] = []
    for message in messages:
        if not message.parts:  # a stored message's text alone (`turns._stored`), most of a
            # history: as `to_chat` makes it, without its calls
            role = message.role if message.role in ROLES else "user"
            chat.append(ChatMessage(role, message.text))  # type: ignore[arg-type]
            continue
        item = tool_item(message)
        if item is None:
            chat.append(to_chat(message, with_images=with_images))
        elif item["type"] == "function_call":
            call = FunctionCall(item["call_id"], item["name"], item["arguments"])
            if chat and chat[-1].role == "assistant":
                chat[-1] = replace(chat[-1], calls=(*chat[-1].calls, call))
            else:
                chat.append(ChatMessage("assistant", "", calls=(call,)))
        else:
            images = images_of(message) if with_images else ()
            chat.append(ChatMessage("tool", message.text, images, call_id=item["call_id"]))
    return chat


def check_call_ids(inputs: Sequence[NewMessage], known: set[str], listed: bool) -> None:
    """Every function_call_output answers a call made earlier (in the history or this input)."""
    seen = set(known)
    for index, message in enumerate(inputs):
        item = tool_item(message)
        if item is None:
            continue
        if item["type"] == "function_call":
            seen.add(item["call_id"])
        elif item["call_id"] not in seen:
            where = f"input[{index}].call_id" if listed else "input.call_id"
            raise InvalidRequest(
                f"No function call with call_id '{item['call_id']}' precedes this output.",
                param=where,
                code="unknown_call_id",
            )
