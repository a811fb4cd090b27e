"""Every input form the two APIs accept, turned into messages.

A string; one message (`{"role", "content"}`, with or without `"type": "message"`); a list of
messages; or a bare content array (`input_text` / `input_image` parts) meaning one user message.
Content is a string or parts: `input_text` / `text` / `output_text`, and `input_image` /
`image_url` with a URL or a data URL. Images are passed on as given: the server never fetches them.
"""

from __future__ import annotations

from typing import Any

from sessionary.conversations.service import NewMessage
from sessionary.kit.errors import InvalidRequest
from sessionary.providers.base import ChatMessage, ImagePart

ROLES = {"user", "assistant", "system", "developer"}
TEXT_PARTS = {"input_text", "text", "output_text"}
IMAGE_PARTS = {"input_image", "image_url"}
MAX_MESSAGES = 500
MAX_TEXT_CHARS = 200_000


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


def _parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
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
        else:
            raise InvalidRequest(
                f"Unsupported content part type '{part_type}' (use input_text or input_image).",
                param=where,
            )
    return parts


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "\n".join(p["text"] for p in parts if "text" in p)


def _message(raw: Any, param: str) -> NewMessage:
    if isinstance(raw, str):
        return NewMessage("user", [{"type": "input_text", "text": raw}], raw)
    if not isinstance(raw, dict):
        raise InvalidRequest("Each input message must be an object or a string.", param=param)
    if raw.get("type") not in (None, "message"):
        raise InvalidRequest(
            f"Unsupported input item type '{raw.get('type')}'.", param=f"{param}.type"
        )
    role = raw.get("role", "user")
    if role not in ROLES:
        raise InvalidRequest(
            f"Invalid role '{role}' (user, assistant, system or developer).", param=f"{param}.role"
        )
    parts = _parts(raw.get("content"), role, f"{param}.content")
    return NewMessage(role, parts, _text_of(parts))


def normalise_input(raw: Any, param: str = "input") -> list[NewMessage]:
    """The turn's new messages; [] when there is no input (the session history answers)."""
    if raw is None or raw == "" or raw == []:
        return []
    if isinstance(raw, (str, dict)):
        messages = [_message(raw, param)]
    elif isinstance(raw, list):
        if all(isinstance(p, dict) and p.get("type") in TEXT_PARTS | IMAGE_PARTS for p in raw):
            parts = _parts(raw, "user", param)
            messages = [NewMessage("user", parts, _text_of(parts))]
        else:
            if len(raw) > MAX_MESSAGES:
                raise InvalidRequest(f"At most {MAX_MESSAGES} input messages.", param=param)
            messages = [_message(item, f"{param}[{i}]") for i, item in enumerate(raw)]
    else:
        raise InvalidRequest(
            "input must be a string, a message, a list of messages or a content array.",
            param=param,
        )
    if sum(len(m.text) for m in messages) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"The input text exceeds {MAX_TEXT_CHARS} characters.", param=param)
    return messages


def images_of(message: NewMessage) -> tuple[ImagePart, ...]:
    return tuple(
        ImagePart(p["image_url"], p.get("detail"))
        for p in message.parts
        if p["type"] == "input_image"
    )


def to_chat(message: NewMessage, *, with_images: bool) -> ChatMessage:
    role = message.role if message.role in ROLES else "user"
    return ChatMessage(
        role,  # type: ignore[arg-type]
        message.text,
        images_of(message) if with_images else (),
    )
