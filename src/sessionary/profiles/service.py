"""Rules for assistant profiles, and the `{{variables}}` of their instructions."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.kit.errors import Forbidden, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import check_metadata, dump, load
from sessionary.kit.models import utcnow
from sessionary.profiles.models import AssistantProfile
from sessionary.profiles.store import ProfileStore

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


class ProfileFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    model: str | None = Field(default=None, max_length=200)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    metadata: Any = None


def render_instructions(template: str | None, variables: dict[str, Any] | None) -> str | None:
    """Fill `{{name}}` from the state variables; unknown names stay as written."""
    if template is None:
        return None
    values = variables or {}
    return _VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def profile_object(row: AssistantProfile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "assistant",
        "created_at": int(row.created_at.timestamp()),
        "name": row.name,
        "description": row.description,
        "model": row.model,
        "instructions": row.instructions,
        "tools": json.loads(row.tools_json),
        "tool_resources": {},
        "metadata": load(row.metadata_json) or {},
        "temperature": row.temperature,
        "top_p": row.top_p,
        "response_format": "auto",
    }


class ProfileService:
    def __init__(self, session: Session) -> None:
        self.store = ProfileStore(session)

    def create(
        self, caller: Principal, fields: ProfileFields, default_model: str
    ) -> AssistantProfile:
        return self.store.add(
            AssistantProfile(
                id=new_id("asst"),
                account_id=caller.account_id,
                name=fields.name,
                description=fields.description,
                instructions=fields.instructions,
                model=fields.model or default_model,
                tools_json=json.dumps(fields.tools or []),
                temperature=fields.temperature,
                top_p=fields.top_p,
                metadata_json=dump(check_metadata(fields.metadata)),
                created_at=utcnow(),
            )
        )

    def owned(
        self, caller: Principal, profile_id: str, param: str = "assistant_id"
    ) -> AssistantProfile:
        row = self.store.get(profile_id)
        if row is None:
            raise NotFound(f"No assistant '{profile_id}'.", param=param)
        if row.account_id != caller.account_id:
            raise Forbidden("This assistant belongs to another account.", param=param)
        return row

    def update(self, caller: Principal, profile_id: str, fields: ProfileFields) -> AssistantProfile:
        row = self.owned(caller, profile_id)
        given = fields.model_dump(exclude_unset=True)
        for name in ("name", "description", "instructions", "model", "temperature", "top_p"):
            if name in given:
                setattr(row, name, given[name])
        if "tools" in given:
            row.tools_json = json.dumps(fields.tools or [])
        if "metadata" in given:
            row.metadata_json = dump(check_metadata(fields.metadata))
        return row

    def delete(self, caller: Principal, profile_id: str) -> str:
        row = self.owned(caller, profile_id)
        self.store.remove(row.id)
        return row.id

    def of_account(self, caller: Principal) -> list[AssistantProfile]:
        return self.store.of_account(caller.account_id)
