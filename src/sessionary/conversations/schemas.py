"""Request bodies of the Threads face (OpenAI's Assistants API): unknown fields are ignored,
as OpenAI's SDK sends some this server does not act on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[Any] | None = None
    metadata: Any = None
    tool_resources: dict[str, Any] | None = None


class ThreadUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: Any = None
    tool_resources: dict[str, Any] | None = None


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Any = None
    content: Any = None
    attachments: Any = None
    metadata: Any = None


class MessageUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    metadata: Any = None


class ConversationCreate(BaseModel):
    """`POST /conversations`: items are validated by the service, one by one, so a wrong one is
    a 400 naming it (`items[3].role`) rather than a schema dump."""

    model_config = ConfigDict(extra="forbid")
    items: Any = None
    metadata: Any = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: Any


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: Any
