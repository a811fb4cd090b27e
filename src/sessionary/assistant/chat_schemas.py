"""The request of `POST /v1/chat/completions`, as OpenAI's chat completions API defines it.

Unknown fields are refused (a 400 naming them), as OpenAI refuses them: a parameter this server
does not know is one it cannot honour. Parameters it knows but cannot honour are declared here
and refused by name in chat_inputs.py, with a message saying why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sessionary.assistant.schemas import MAX_OUTPUT_TOKENS_LIMIT

MAX_MESSAGES = 500
MAX_TOOLS = 128
INT64 = 2**63 - 1


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    model: str | None = Field(default=None, max_length=200)
    stream: bool | None = Field(default=None, strict=True)
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS_LIMIT, strict=True)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, le=MAX_OUTPUT_TOKENS_LIMIT, strict=True
    )
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-INT64, le=INT64, strict=True)
    n: int | None = Field(default=None, strict=True)
    logprobs: bool | None = Field(default=None, strict=True)
    top_logprobs: int | None = Field(default=None, strict=True)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = Field(default=None, strict=True)
    store: bool | None = Field(default=None, strict=True)
    metadata: dict[str, Any] | None = None
    # Identifiers of the end user and of the prompt's cache: recorded nowhere, chosen by nothing.
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    service_tier: str | None = Field(default=None, max_length=32)
    # Known, and refused with a 400 naming them unless given as their no-op value.
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    logit_bias: dict[str, Any] | None = None
    reasoning_effort: str | None = Field(default=None, max_length=32)
    verbosity: str | None = Field(default=None, max_length=32)
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    moderation: Any = None
    prompt_cache_retention: str | None = Field(default=None, max_length=32)
    prompt_cache_options: Any = None


class ChatCompletionUpdate(BaseModel):
    """`POST /v1/chat/completions/{id}`: a stored completion's new metadata (null clears it)."""

    model_config = ConfigDict(extra="forbid")

    metadata: Any
