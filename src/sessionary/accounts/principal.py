"""Who is calling: `Authorization: Bearer <key>` turned into the calling account."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import structlog
from fastapi import Depends, Request
from starlette.datastructures import Headers

from sessionary.accounts.service import AccountService
from sessionary.kit.db import Database
from sessionary.kit.dependencies import AppDatabase, AppSettings
from sessionary.kit.errors import Unauthorized
from sessionary.kit.models import utcnow

log = structlog.get_logger("sessionary.auth")


@dataclass(frozen=True)
class Principal:
    account_id: str
    api_key_id: str


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "Malformed Authorization header. Expected 'Bearer <key>'.", code="invalid_api_key"
        )
    return token


def get_principal(request: Request, db: AppDatabase, settings: AppSettings) -> Principal:
    """Resolved in short sessions of its own, before the route's transaction begins.

    Sharing the route's session would open a SQLite write transaction at the first lookup of
    every POST, and the `last_used_at` write below would then wait on its own request.
    """
    token = bearer_token(request)
    with db.session(write=False) as session:
        key = AccountService(session).authenticate(token)
    interval = timedelta(seconds=settings.key_touch_interval_seconds)
    if key.last_used_at is None or key.last_used_at < utcnow() - interval:
        try:
            with db.session() as touch_session:
                AccountService(touch_session).touch(key.id, interval)
        except Exception:  # last_used_at is bookkeeping; never fail a request over it
            log.warning("key_touch_failed", key_id=key.id, exc_info=True)
    structlog.contextvars.bind_contextvars(account_id=key.account_id)
    return Principal(account_id=key.account_id, api_key_id=key.id)


Caller = Annotated[Principal, Depends(get_principal)]


def caller_scope(db: Database) -> Callable[[Headers], str | None]:
    """Who a request speaks for, as a stable string (idempotency keys are scoped by it).

    None when the credential is missing or invalid: the route itself will answer 401.
    """

    def scope_of(headers: Headers) -> str | None:
        header = headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            with db.session(write=False) as session:
                key = AccountService(session).authenticate(token.strip())
        except Unauthorized:
            return None
        return f"account:{key.account_id}"

    return scope_of
