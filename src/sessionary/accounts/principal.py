"""Who is calling: `Authorization: Bearer <key>` turned into the calling account."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

import structlog
from fastapi import Depends, Request
from starlette.datastructures import Headers

from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.chatkit.service import SECRET_TYPE as CLIENT_SECRET_TYPE
from sessionary.chatkit.service import ChatKitService
from sessionary.kit.db import Database
from sessionary.kit.dependencies import AppDatabase, AppSettings
from sessionary.kit.errors import Forbidden, Unauthorized
from sessionary.kit.models import utcnow

log = structlog.get_logger("sessionary.auth")


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


def get_any_principal(request: Request, db: AppDatabase, settings: AppSettings) -> Principal:
    """Resolved in short sessions of its own, before the route's transaction begins.

    Sharing the route's session would open a SQLite write transaction at the first lookup of
    every POST, and the `last_used_at` write below would then wait on its own request.
    """
    token = bearer_token(request)
    if token.startswith(CLIENT_SECRET_TYPE):
        # A write: every request with a client secret counts against its rate limit.
        with db.session() as session:
            principal = ChatKitService(session).authenticate(token)
        structlog.contextvars.bind_contextvars(account_id=principal.account_id)
        return principal
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


def get_principal(principal: Annotated[Principal, Depends(get_any_principal)]) -> Principal:
    """Account-level callers only: a ChatKit client secret is refused here."""
    if principal.session_scope is not None:
        raise Forbidden(
            "A ChatKit client secret may only make turns and reads on its own session.",
            code="client_secret_forbidden",
        )
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
# Routes that a ChatKit client secret may also call (turns and reads on its session).
SessionCaller = Annotated[Principal, Depends(get_any_principal)]


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
