"""An assistant profile in OpenAI's Assistants API shape."""

from __future__ import annotations

import json
from typing import Any

import structlog

from sessionary.kit.metadata import load
from sessionary.profiles.models import AssistantProfile
from sessionary.profiles.service import shows

log = structlog.get_logger("sessionary.profiles")


def shown_tools(row: AssistantProfile) -> list[Any]:
    """The stored tools, less any kept before tools were checked that nests past what serializes
    (else every list of the account is a 500): logged, and gone once new `tools` are set."""
    try:
        stored = json.loads(row.tools_json)
    except RecursionError:
        log.warning("profile_tools_hidden", profile_id=row.id, hidden="all")
        return []
    shown = [tool for tool in stored if shows(tool)]
    if len(shown) < len(stored):
        log.warning("profile_tools_hidden", profile_id=row.id, hidden=len(stored) - len(shown))
    return shown


def profile_object(row: AssistantProfile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "assistant",
        "created_at": int(row.created_at.timestamp()),
        "name": row.name,
        "description": row.description,
        "model": row.model,
        "instructions": row.instructions,
        "tools": shown_tools(row),
        "tool_resources": {},
        "metadata": load(row.metadata_json) or {},
        "temperature": row.temperature,
        "top_p": row.top_p,
        "response_format": "auto",
    }
