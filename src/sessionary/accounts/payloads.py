"""Answers of the accounts domain that are built, not declared (samsar-js's login token)."""

from __future__ import annotations

from typing import Any

from sessionary.accounts.tokens import IssuedToken
from sessionary.config import Settings


def login_token_answer(issued: IssuedToken, base_url: str, settings: Settings) -> dict[str, Any]:
    """The samsar-js shape, with a loginUrl built from SESSIONARY_LOGIN_URL (or this server)."""
    row = issued.row
    template = settings.login_url or (
        base_url.rstrip("/") + "/users/verify_token?loginToken={token}"
    )
    return {
        "loginToken": issued.plaintext,
        "expiresInSeconds": settings.login_token_ttl_seconds,
        "expiresAt": row.expires_at.isoformat(),
        "loginUrl": template.format(token=issued.plaintext, redirect=row.redirect or ""),
    }
