"""An assistant profile in OpenAI's Assistants API shape."""

from __future__ import annotations

import json
from typing import Any

from sessionary.kit.metadata import load
from sessionary.profiles.models import AssistantProfile


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
