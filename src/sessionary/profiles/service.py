"""Rules for assistant profiles, and the `{{variables}}` of their instructions."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.kit.errors import Forbidden, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import check_metadata, dump
from sessionary.kit.models import utcnow
from sessionary.profiles.models import AssistantProfile
from sessionary.profiles.schemas import ProfileFields
from sessionary.profiles.store import ProfileStore

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def render_instructions(template: str | None, variables: dict[str, Any] | None) -> str | None:
    """Fill `{{name}}` from the state variables; unknown names stay as written."""
    if template is None:
        return None
    values = variables or {}
    return _VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


class ProfileService:
    def __init__(self, db: Session) -> None:
        self.store = ProfileStore(db)

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

    def find(self, caller: Principal, profile_id: str) -> AssistantProfile | None:
        """The caller's profile, or None (another account's is as unknown as a missing one)."""
        row = self.store.get(profile_id)
        return row if row is not None and row.account_id == caller.account_id else None

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
