"""Conversation items, as OpenAI's Conversations API speaks of them, over stored messages.

A stored message (role, parts in the Responses shape, plain text) is one item. Most are
`message` items; a message whose one part is an `image_generation_call`, `function_call` or
`function_call_output` item is shown as that item, which is how a turn stores what it made. The
item's id is the stored message's id, whatever face wrote it, so every face names it alike.
"""

from __future__ import annotations

import json
from typing import Any

from sessionary.conversations.models import ConversationMessage
from sessionary.conversations.service import NewMessage
from sessionary.kit.errors import InvalidRequest

MAX_ITEMS = 20
MAX_TEXT_CHARS = 200_000
MAX_CALL_ID = 128
MAX_NAME = 64
ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
ITEM_PARTS = ("image_generation_call", "function_call", "function_call_output")
IMAGE_STATUSES = ("in_progress", "completed", "generating", "failed")
IMAGE_FIELDS = ("action", "background", "output_format", "quality", "revised_prompt", "size")

# `include` values: what every item already carries, and what concerns only item types this
# server never stores (so there is nothing to add). Anything else is a 400 naming `include`.
ALWAYS_INCLUDED = {"message.input_image.image_url"}
NOTHING_TO_INCLUDE = {
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
}


def check_include(include: list[str] | None) -> None:
    for value in include or []:
        if value in ALWAYS_INCLUDED or value in NOTHING_TO_INCLUDE:
            continue
        reason = (
            "logprobs are not kept with stored messages"
            if value == "message.output_text.logprobs"
            else "it is not an includable field"
        )
        raise InvalidRequest(f"Cannot include '{value}': {reason}.", param="include")


# Reading: stored message -> item


def _content_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "output_text":
        return {
            "type": "output_text",
            "text": part.get("text", ""),
            "annotations": part.get("annotations") or [],
        }
    if kind == "input_image":
        return {
            "type": "input_image",
            "image_url": part.get("image_url"),
            "file_id": part.get("file_id"),
            "detail": part.get("detail") or "auto",
        }
    if kind == "image_file":  # a Threads message's image: a file id, no URL
        return {
            "type": "input_image",
            "image_url": None,
            "file_id": part.get("file_id"),
            "detail": part.get("detail") or "auto",
        }
    return dict(part)


def item_object(message: ConversationMessage) -> dict[str, Any]:
    parts: list[dict[str, Any]] = json.loads(message.content_json)
    kind = parts[0].get("type") if len(parts) == 1 else None
    if kind == "image_generation_call":
        image = parts[0]
        item = {
            "id": message.id,
            "type": "image_generation_call",
            "status": image.get("status") or "completed",
            "result": image.get("result"),
        }
        return item | {k: image[k] for k in IMAGE_FIELDS if image.get(k) is not None}
    if kind == "function_call":
        call = parts[0]
        return {
            "id": message.id,
            "type": "function_call",
            "call_id": call.get("call_id"),
            "name": call.get("name"),
            "arguments": call.get("arguments", ""),
            "status": message.status,
        }
    if kind == "function_call_output":
        output = parts[0]
        return {
            "id": message.id,
            "type": "function_call_output",
            "call_id": output.get("call_id"),
            "output": output.get("output", ""),
            "status": message.status,
        }
    return {
        "id": message.id,
        "type": "message",
        "role": message.role,
        "status": message.status,
        "content": [_content_part(p) for p in parts],
    }


# Writing: item param -> message to store


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{key}' must be a string.", param=f"{where}.{key}")
    return value


def _bounded(raw: dict[str, Any], key: str, where: str, limit: int) -> str:
    value = _text(raw, key, where)
    if not 0 < len(value) <= limit:
        raise InvalidRequest(f"'{key}' is 1 to {limit} characters.", param=f"{where}.{key}")
    return value


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if isinstance(url, dict):  # the Chat Completions spelling
        url = url.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
        raise InvalidRequest(
            "An input_image needs an 'image_url' (an http(s) URL or a data:image/... URL); "
            "file ids are not supported (this server has no Files API).",
            param=f"{where}.image_url",
        )
    detail = part.get("detail", "auto")
    if detail not in ("low", "high", "auto", "original"):
        raise InvalidRequest(
            "detail is 'low', 'high', 'auto' or 'original'.", param=f"{where}.detail"
        )
    return {"type": "input_image", "image_url": url, "detail": detail}


def _parts(content: Any, role: str, where: str) -> list[dict[str, Any]]:
    text_kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return [{"type": text_kind, "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(
            "content must be a string or a non-empty list of parts.", param=f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        if not isinstance(part, dict):
            raise InvalidRequest("A content part must be an object.", param=at)
        kind = part.get("type")
        if kind in TEXT_PARTS:
            stored: dict[str, Any] = {"type": text_kind, "text": _text(part, "text", at)}
            if text_kind == "output_text":
                annotations = part.get("annotations") or []
                if not isinstance(annotations, list):
                    raise InvalidRequest("annotations must be a list.", param=f"{at}.annotations")
                stored["annotations"] = annotations
            parts.append(stored)
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "refusal", "refusal": _text(part, "refusal", at)})
        elif kind == "input_image" and role != "assistant":
            parts.append(_image_part(part, at))
        else:
            allowed = "output_text or refusal" if role == "assistant" else "input_text, input_image"
            raise InvalidRequest(
                f"Unsupported content part '{kind}' in a {role} message (use {allowed}; "
                "input_file is not supported: this server has no Files API).",
                param=f"{at}.type",
            )
    return parts


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "\n".join(
        p.get("text") or p.get("refusal") or "" for p in parts if p["type"] != "input_image"
    )


def _message(raw: dict[str, Any], where: str) -> NewMessage:
    role = raw.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}.", param=f"{where}.role")
    parts = _parts(raw.get("content"), role, where)
    return NewMessage(role, parts, _text_of(parts))


def _image_call(raw: dict[str, Any], where: str) -> NewMessage:
    result = raw.get("result")
    if result is not None and not isinstance(result, str):
        raise InvalidRequest("result must be a base64 string or null.", param=f"{where}.result")
    status = raw.get("status", "completed")
    if status not in IMAGE_STATUSES:
        raise InvalidRequest(
            f"status must be one of {', '.join(IMAGE_STATUSES)}.", param=f"{where}.status"
        )
    item: dict[str, Any] = {"type": "image_generation_call", "status": status, "result": result}
    item |= {k: raw[k] for k in IMAGE_FIELDS if isinstance(raw.get(k), str)}
    note = f"[generated an image: {item.get('revised_prompt') or ''}]"
    return NewMessage("assistant", [item], note)


def _function_call(raw: dict[str, Any], where: str) -> NewMessage:
    """Stored as the Responses API stores a replayed call: the assistant's, its one part the
    call itself."""
    call_id = _bounded(raw, "call_id", where, MAX_CALL_ID)
    name = _bounded(raw, "name", where, MAX_NAME)
    arguments = _text(raw, "arguments", where)
    item = {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    if isinstance(raw.get("id"), str):  # the model's own id for the call (fc_...), kept with it
        item["id"] = raw["id"]
    return NewMessage("assistant", [item], f"{name}({arguments})")


def _function_output(raw: dict[str, Any], where: str) -> NewMessage:
    """Stored as a "tool" message whose one part is the output item (a string, or text and
    image parts)."""
    call_id = _bounded(raw, "call_id", where, MAX_CALL_ID)
    output = raw.get("output")
    if isinstance(output, str):
        text = output
    elif isinstance(output, list) and output:
        output = _parts(output, "user", f"{where}.output")
        text = _text_of(output)
    else:
        raise InvalidRequest(
            "output must be a string or a non-empty list of content parts.",
            param=f"{where}.output",
        )
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return NewMessage("tool", [item], text)


def parse_items(raw: Any, param: str = "items") -> list[NewMessage]:
    """Items to add to a conversation, validated and in the stored shape; 400 naming the first
    one that is wrong (nothing is stored then)."""
    if not isinstance(raw, list):
        raise InvalidRequest("items must be a list.", param=param)
    if len(raw) > MAX_ITEMS:
        raise InvalidRequest(f"At most {MAX_ITEMS} items may be added at a time.", param=param)
    messages: list[NewMessage] = []
    for index, item in enumerate(raw):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest("Each item must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            messages.append(_function_call(item, where))
        elif kind == "function_call_output":
            messages.append(_function_output(item, where))
        elif kind == "image_generation_call":
            messages.append(_image_call(item, where))
        else:
            raise InvalidRequest(
                f"Item type '{kind}' is not supported (message, function_call, "
                "function_call_output or image_generation_call).",
                param=f"{where}.type",
            )
    if sum(len(m.text) for m in messages) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"The items' text exceeds {MAX_TEXT_CHARS} characters.", param=param)
    return messages
