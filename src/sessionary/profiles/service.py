"""Rules for assistant profiles, and the `{{variables}}` of their instructions."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.kit.errors import Forbidden, InvalidRequest, NotFound, invalid_shape
from sessionary.kit.ids import new_id
from sessionary.kit.json_schema import check_bounds, check_schema
from sessionary.kit.metadata import check_metadata, dump
from sessionary.kit.models import utcnow
from sessionary.profiles.models import AssistantProfile
from sessionary.profiles.schemas import TOOL_KINDS, FunctionTool, ProfileFields
from sessionary.profiles.store import ProfileStore

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
MAX_SCHEMA_CHARS = 100_000


def render_instructions(template: str | None, variables: dict[str, Any] | None) -> str | None:
    """Fill `{{name}}` from the state variables; unknown names stay as written."""
    if template is None:
        return None
    values = variables or {}
    return _VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def _parameters(raw: Any, param: str) -> tuple[BaseModel, dict[str, Any] | None]:
    """The tool as validated, and its function's parameters schema if any, of a tool shaped as
    the Assistants API shapes it; 400 (naming the field) for any other shape."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise InvalidRequest("Each tool must be an object with a 'type'.", param=param)
    kind = TOOL_KINDS.get(raw["type"])
    if kind is None:
        raise InvalidRequest(
            f"The tool type '{raw['type'][:64]}' is not an assistant tool: offer 'function', "
            "'code_interpreter' or 'file_search'.",
            param=f"{param}.type",
            code="unsupported_tool",
        )
    try:
        tool = kind.model_validate(raw)
    except ValidationError as exc:
        raise invalid_shape(exc, "tool", param) from None
    if not isinstance(tool, FunctionTool) or tool.function.parameters is None:
        return tool, None
    schema = tool.function.parameters
    if schema.get("type", "object") != "object":
        raise InvalidRequest(
            "function.parameters must be a JSON Schema object ({'type': 'object', ...}).",
            param=f"{param}.function.parameters",
        )
    return tool, schema


def check_tools(tools: list[dict[str, Any]] | None, scope: str) -> list[dict[str, Any]]:
    """The tools to store, as validated (`"strict": "yes"` is stored `true`), held to the bounds
    `/v1/responses` holds its own to: stored, a schema nested past what serializes made every
    later list of the account a 500."""
    checked = []
    for index, raw in enumerate(tools or []):
        param = f"tools[{index}]"
        tool, schema = _parameters(raw, param)
        checked.append(tool.model_dump(exclude_unset=True))
        if schema is None:
            continue
        check_schema(schema, f"{param}.function.parameters", scope=scope)
        if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
            raise InvalidRequest(
                f"function.parameters exceeds {MAX_SCHEMA_CHARS} characters.",
                param=f"{param}.function.parameters",
            )
    return checked


def shows(tool: Any) -> bool:
    """Whether a stored tool can be shown: one kept before tools were checked may not be (its
    keywords are not checked again here, only its shape and bounds, a read being frequent)."""
    try:
        _, schema = _parameters(tool, "tools")
        if schema is not None:
            check_bounds(schema, "tools")
    except InvalidRequest:
        return False
    return True


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
                tools_json=json.dumps(check_tools(fields.tools, caller.account_id)),
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
        if "tools" in given:
            row.tools_json = json.dumps(check_tools(fields.tools, caller.account_id))
        for name in ("name", "description", "instructions", "model", "temperature", "top_p"):
            if name in given:
                setattr(row, name, given[name])
        if "metadata" in given:
            row.metadata_json = dump(check_metadata(fields.metadata))
        return row

    def delete(self, caller: Principal, profile_id: str) -> str:
        row = self.owned(caller, profile_id)
        self.store.remove(row.id)
        return row.id

    def of_account(self, caller: Principal) -> list[AssistantProfile]:
        return self.store.of_account(caller.account_id)
