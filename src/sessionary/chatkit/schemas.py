"""The body of `POST /v1/chatkit/sessions`, as OpenAI's ChatKit sends it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StateValue = str | int | bool | float


class Workflow(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=100)
    state_variables: dict[str, StateValue] | None = Field(default=None, max_length=64)
    tracing: dict[str, Any] | None = None


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=1, le=600, strict=True)


class RateLimits(BaseModel):
    max_requests_per_1_minute: int = Field(default=10, ge=1, le=10_000, strict=True)


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: str = Field(min_length=1, max_length=512)
    workflow: Workflow
    chatkit_configuration: dict[str, Any] | None = None
    expires_after: ExpiresAfter | None = None
    rate_limits: RateLimits | None = None
