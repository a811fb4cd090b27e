"""A ChatKit session in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

from sessionary.chatkit.models import ChatKitSession
from sessionary.chatkit.service import status_of


def session_object(row: ChatKitSession, client_secret: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "chatkit.session",
        # The secret exists in plaintext only in the answer that created it.
        "client_secret": client_secret or f"{row.secret_prefix}…",
        "expires_at": int(row.expires_at.timestamp()),
        "max_requests_per_1_minute": row.max_requests_per_minute,
        "rate_limits": {"max_requests_per_1_minute": row.max_requests_per_minute},
        "status": status_of(row),
        "user": row.user,
        "workflow": json.loads(row.workflow_json),
        "chatkit_configuration": json.loads(row.configuration_json),
    }
