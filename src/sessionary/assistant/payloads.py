"""OpenAI Responses payloads, built once per turn and stored as answered."""

from __future__ import annotations

from typing import Any

from sessionary.assistant.schemas import TurnRequest
from sessionary.assistant.tools import ToolPlan
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


ABSENT_FEATURES = (
    "access_programs",
    "image",
    "input_transformations",
    "moderation",
    "prompt_cache_diagnostics",
    "prompt_cache_options",
    "tool_usage",
)


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    request: TurnRequest,
    tools: ToolPlan,
    truncation: str,
    temperature: float | None,
    session_id: str,
    previous_response_id: str | None,
    instructions: str | None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every field of OpenAI's Response object, on every path (create, retrieve, each event).

    Parameters are echoed as the turn used them. Beyond the SDK's fields: `output_text` (the SDK
    reads it as a property; Samsar's clients read it as a field), `session_id` (Samsar's name for
    the conversation), `presence_penalty` / `frequency_penalty` (OpenAI's API answers them; the
    SDK's type does not list them yet). A stream's final event adds `credits`.
    """
    text_config = request.text or {"format": {"type": "text"}}
    reasoning = request.reasoning or {}
    effort = reasoning.get("effort") or request.reasoning_effort
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(request.background),
        "completed_at": created_at if status == "completed" else None,
        "conversation": {"id": session_id},
        "session_id": session_id,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "model": model,
        "output": output,
        "output_text": output_text(output),
        "parallel_tool_calls": True
        if request.parallel_tool_calls is None
        else request.parallel_tool_calls,
        "previous_response_id": previous_response_id,
        "prompt": None,
        "prompt_cache_key": request.prompt_cache_key,
        "prompt_cache_retention": request.prompt_cache_retention,
        "reasoning": {"effort": effort, "summary": reasoning.get("summary")},
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",
        "store": request.store,
        "temperature": temperature if temperature is not None else 1.0,
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
        "text": text_config,
        "tool_choice": tools.choice_echo,
        "tools": list(tools.echo),
        "top_logprobs": request.top_logprobs or 0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": truncation,
        "usage": usage_object(usage) if usage else None,
        "user": request.user,
        # Fields of features this server does not have: present, and null, as the SDK expects.
        **dict.fromkeys(ABSENT_FEATURES),
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
