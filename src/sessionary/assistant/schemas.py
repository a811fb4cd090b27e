"""Request shapes of the assistant routes (Samsar's aliases accepted as samsar-js sends them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

MAX_OUTPUT_TOKENS_LIMIT = 32_768


class TurnRequest(BaseModel):
    """What `/assistant/completion` and `/responses` share.

    Unknown parameters are ignored here because Samsar's clients send fields of their own on
    `/assistant/completion`; `/responses` (OpenAI's wire format) refuses them with a 400 naming
    the parameter, so nothing an OpenAI client asks for is dropped in silence.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    input: Any = Field(default=None, validation_alias=AliasChoices("input", "message", "messages"))
    model: str | None = Field(default=None, max_length=200)
    instructions: str | None = Field(default=None, max_length=100_000)
    previous_response_id: str | None = Field(
        default=None, validation_alias=AliasChoices("previous_response_id", "previousResponseId")
    )
    max_output_tokens: int | None = Field(
        strict=True,
        default=None,
        ge=1,
        le=MAX_OUTPUT_TOKENS_LIMIT,
        validation_alias=AliasChoices("max_output_tokens", "max_tokens", "maxOutputTokens"),
    )
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    top_logprobs: int | None = Field(default=None, ge=0, le=20, strict=True)
    include: list[str] | None = Field(default=None, max_length=16)
    reasoning: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1, le=128, strict=True)
    truncation: Literal["auto", "disabled"] | None = None
    store: bool = True
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    background: bool | None = None


class CompletionRequest(TurnRequest):
    session_id: Any = Field(
        default=None, validation_alias=AliasChoices("session_id", "sessionId", "id")
    )


class ResponsesRequest(TurnRequest):
    """OpenAI's `POST /responses`: an unknown parameter is a 400 naming it, as OpenAI answers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    conversation: str | dict[str, Any] | None = None


class NewSessionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    session_name: str | None = Field(
        default=None,
        max_length=200,
        validation_alias=AliasChoices("session_name", "sessionName", "name"),
    )
    metadata: dict[str, Any] | None = None


class SystemPromptRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    system_prompt: str | None = Field(
        default=None,
        max_length=100_000,
        validation_alias=AliasChoices("system_prompt", "systemPrompt"),
    )
    model: str | None = Field(default=None, max_length=200)


class EnhanceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message: Any = None
    metadata: dict[str, Any] | None = None
    language: str | None = Field(default=None, max_length=64)
    maxwords: int | None = Field(
        strict=True,
        default=None,
        ge=1,
        le=2000,
        validation_alias=AliasChoices("maxwords", "maxWords"),
    )
