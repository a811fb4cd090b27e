"""How one stored session and its messages look through each API: thread, thread.message,
ChatKit thread and items. Messages are stored in the Responses shape; these render them."""

from __future__ import annotations

import json
from typing import Any

from sessionary.conversations.models import ConversationMessage, ConversationSession
from sessionary.kit.metadata import load

TEXT_PARTS = ("input_text", "output_text")


def unix(when: Any) -> int:
    return int(when.timestamp())


def thread_object(conversation: ConversationSession) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "thread",
        "created_at": unix(conversation.created_at),
        "metadata": load(conversation.metadata_json) or {},
        "tool_resources": {},
    }


def session_object(conversation: ConversationSession) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "session",
        "kind": conversation.kind,
        "name": conversation.name,
        "created_at": unix(conversation.created_at),
        "updated_at": unix(conversation.updated_at),
        "last_response_id": conversation.last_response_id,
        "metadata": load(conversation.metadata_json) or {},
    }


def _thread_content(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": {"value": part.get("text", ""), "annotations": []}}
    if kind == "input_image":
        return {
            "type": "image_url",
            "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")},
        }
    if kind == "image_file":
        return {
            "type": "image_file",
            "image_file": {"file_id": part["file_id"], "detail": part.get("detail", "auto")},
        }
    if kind == "function_call":
        call = f"{part.get('name')}({part.get('arguments')})"
        return {"type": "text", "text": {"value": call, "annotations": []}}
    if kind == "function_call_output":
        return {"type": "text", "text": {"value": output_text(part), "annotations": []}}
    if kind == "image_generation_call" and part.get("result"):
        fmt = part.get("output_format") or "png"
        return {
            "type": "image_url",
            "image_url": {"url": f"data:image/{fmt};base64,{part['result']}", "detail": "auto"},
        }
    return None


def output_text(item: dict[str, Any]) -> str:
    """A function_call_output's output as text (a string, or its text parts joined)."""
    output = item.get("output")
    if isinstance(output, str):
        return output
    return "\n".join(p.get("text", "") for p in output or [] if isinstance(p, dict))


def tool_item(message: ConversationMessage) -> dict[str, Any] | None:
    """The function_call or function_call_output item a stored message holds, if it is one."""
    if message.role != "tool" and '"function_call"' not in message.content_json:
        return None
    parts = json.loads(message.content_json)
    if len(parts) == 1 and parts[0].get("type") in ("function_call", "function_call_output"):
        return dict(parts[0])
    return None


def response_item(message: ConversationMessage) -> dict[str, Any]:
    """A stored message as a Responses item (what `input_items` lists)."""
    item = tool_item(message)
    if item is not None:
        return {**item, "id": item.get("id") or message.id, "status": message.status}
    return {
        "id": message.id,
        "type": "message",
        "role": message.role,
        "status": message.status,
        "content": json.loads(message.content_json),
    }


def message_object(message: ConversationMessage) -> dict[str, Any]:
    parts = json.loads(message.content_json)
    created = unix(message.created_at)
    return {
        "id": message.id,
        "object": "thread.message",
        "created_at": created,
        "thread_id": message.session_id,
        "status": message.status,
        "completed_at": created if message.status == "completed" else None,
        "incomplete_at": None,
        "incomplete_details": None,
        "role": message.role if message.role in ("user", "assistant") else "user",
        "content": [c for c in (_thread_content(p) for p in parts) if c is not None],
        "assistant_id": message.assistant_id,
        "run_id": message.run_id,
        "attachments": load(message.attachments_json) or [],
        "metadata": load(message.metadata_json) or {},
    }


def chatkit_thread(conversation: ConversationSession, user: str) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "chatkit.thread",
        "created_at": unix(conversation.created_at),
        "status": {"type": "active"},
        "title": conversation.name,
        "user": user,
    }


def chatkit_items(messages: list[ConversationMessage]) -> list[dict[str, Any]]:
    """ChatKit's items: a function call is one `chatkit.client_tool_call` carrying its output
    (when the output is on the same page), so outputs are not items of their own."""
    outputs = {
        item["call_id"]: output_text(item)
        for item in (tool_item(m) for m in messages)
        if item is not None and item["type"] == "function_call_output"
    }
    items = []
    for message in messages:
        item = tool_item(message)
        if item is not None and item["type"] == "function_call_output":
            continue
        items.append(chatkit_item(message, outputs))
    return items


def chatkit_item(
    message: ConversationMessage, outputs: dict[str, str] | None = None
) -> dict[str, Any]:
    parts = json.loads(message.content_json)
    base = {
        "id": message.id,
        "object": "chatkit.thread_item",
        "created_at": unix(message.created_at),
        "thread_id": message.session_id,
    }
    call = tool_item(message)
    if call is not None and call["type"] == "function_call":
        output = (outputs or {}).get(call["call_id"])
        return {
            **base,
            "type": "chatkit.client_tool_call",
            "call_id": call["call_id"],
            "name": call["name"],
            "arguments": call["arguments"],
            "output": output,
            "status": "in_progress" if output is None else "completed",
        }
    if message.role == "assistant":
        texts = [p.get("text", "") for p in parts if p.get("type") == "output_text"]
        return {
            **base,
            "type": "chatkit.assistant_message",
            "content": [{"type": "output_text", "text": t, "annotations": []} for t in texts]
            or [{"type": "output_text", "text": message.text, "annotations": []}],
        }
    return {
        **base,
        "type": "chatkit.user_message",
        "content": [
            {"type": "input_text", "text": p.get("text", "")}
            for p in parts
            if p.get("type") == "input_text"
        ],
        "attachments": [],
        "inference_options": None,
    }


def chat_message_object(message: ConversationMessage) -> dict[str, Any]:
    """A stored message as chat completions list it (`ChatCompletionStoreMessage`): text as
    `content`, images as `content_parts` beside it, calls as `tool_calls`."""
    parts = json.loads(message.content_json)
    item: dict[str, Any] = {"id": message.id, "role": message.role, "name": None}
    output = tool_item(message)
    if output is not None and output["type"] == "function_call_output":
        return {**item, "content": output_text(output), "tool_call_id": output["call_id"]}
    text = "".join(p.get("text", "") for p in parts if p.get("type") in TEXT_PARTS)
    calls = [p for p in parts if p.get("type") == "function_call"]
    images = [p["image_url"] for p in parts if p.get("type") == "input_image"]
    item["content"] = text if text or not calls else None
    item["content_parts"] = None
    if images:
        item["content_parts"] = [{"type": "text", "text": text}] if text else []
        item["content_parts"] += [{"type": "image_url", "image_url": {"url": u}} for u in images]
    if calls:
        item["tool_calls"] = [
            {
                "id": call["call_id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for call in calls
        ]
    return item
