"""OpenAI Responses payloads, built once per turn and stored as answered."""

from __future__ import annotations

from typing import Any

from sessionary.assistant.schemas import TurnRequest
from sessionary.conversations.models import ConversationSession
from sessionary.kit.metadata import load
from sessionary.kit.request_context import current_request_id
from sessionary.providers.base import Usage


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def image_item(
    item_id: str,
    result: str | None,
    revised_prompt: str | None,
    options: dict[str, Any],
    status: str = "completed",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "image_generation_call",
        "status": status,
        "revised_prompt": revised_prompt,
        "result": result,
    }
    for key in ("size", "quality", "output_format", "background"):
        if options.get(key) is not None:
            item[key] = options[key]
    return item


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def output_text(output: list[dict[str, Any]]) -> str:
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    )


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    request: TurnRequest,
    session_id: str,
    previous_response_id: str | None,
    instructions: str | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    text_config = request.text or {"format": {"type": "text"}}
    effort = (request.reasoning or {}).get("effort") or request.reasoning_effort
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": created_at if status == "completed" else None,
        "conversation": {"id": session_id},
        "session_id": session_id,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "model": model,
        "output": output,
        "output_text": output_text(output),
        "parallel_tool_calls": True
        if request.parallel_tool_calls is None
        else request.parallel_tool_calls,
        "previous_response_id": previous_response_id,
        "reasoning": {"effort": effort, "summary": None},
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": text_config,
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
        "usage": usage_object(usage) if usage else None,
        "user": request.user,
    }


def session_object(row: ConversationSession) -> dict[str, Any]:
    """Samsar's answer for a new assistant session."""
    return {
        "session_id": row.id,
        "request_id": current_request_id(),
        "session_type": row.kind,
        "session_name": row.name,
        "metadata": load(row.metadata_json) or {},
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
