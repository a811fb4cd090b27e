"""Chat completion objects and chunks, as OpenAI's SDK types read them (`openai.types.chat`)."""

from __future__ import annotations

from typing import Any

from sessionary.billing.ledger import Settlement
from sessionary.billing.money import credits_number
from sessionary.providers.base import FinishReason, FunctionCall, Usage

# The provider's reasons as chat completions name them: a loop cut short, or a generation the
# client cancelled, ended the answer where it stood ("stop").
FINISH_REASONS: dict[str, str] = {"length": "length", "tool_calls": "tool_calls"}


def finish_reason(reason: FinishReason, calls: tuple[FunctionCall, ...] | list[Any]) -> str:
    if calls and reason != "length":
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tool_call_object(call: FunctionCall) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def credits_object(settlement: Settlement) -> dict[str, float]:
    """The charge, on a streamed answer's last chunk (its headers could only announce the hold)."""
    return {
        "charged": credits_number(settlement.charged_micro),
        "remaining": credits_number(settlement.remaining_micro),
    }


def completion_object(
    *,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    calls: tuple[FunctionCall, ...],
    reason: str,
    usage: Usage,
    session_id: str | None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The answer of `POST /v1/chat/completions`; a stored one (`session_id`) also carries its
    metadata, as a later GET of it does (`conversations/completions.stored_completion_object`)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = [tool_call_object(c) for c in calls]
    payload: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": usage_object(usage),
        "service_tier": "default",
        "system_fingerprint": None,
    }
    if session_id is not None:  # store: true - the session the completion was recorded on
        payload["session_id"] = session_id
        payload["metadata"] = metadata or {}
    return payload


class ChunkWriter:
    """`data: {chat.completion.chunk}` lines sharing the completion's id, time and model."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
        }
        self.include_usage = include_usage

    def __call__(
        self, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        if self.include_usage:  # as OpenAI: null on every chunk but the last
            chunk["usage"] = None
        return chunk

    def usage(self, usage: Usage, **extra: Any) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage_object(usage), **extra}
