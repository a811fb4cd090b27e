"""Answers of the accounts domain built from rows: samsar-js's login token, token listings."""

from __future__ import annotations

from typing import Any

from sessionary.accounts.models import ClientToken
from sessionary.accounts.schemas import AuthTokenInfo
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


def token_info(row: ClientToken) -> AuthTokenInfo:
    return AuthTokenInfo(
        id=row.id,
        prefix=row.prefix,
        external_user_id=row.external_user_id,
        api_key_id=row.api_key_id,
        parent_token_id=row.parent_token_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
