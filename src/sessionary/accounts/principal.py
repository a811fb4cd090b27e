"""Who is calling: `Authorization: Bearer <key or auth token>` (and `x-external-user-api-key`)
turned into a Principal: the account, one of its external users, or a ChatKit client secret."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sessionary.accounts.bearers import CookieKind, bearer_kind_of, cookie_credential
from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import AUTH_TOKEN_TYPE
from sessionary.accounts.service import AccountService, KeyCheck, check_key, key_prefix
from sessionary.accounts.store import AccountStore
from sessionary.accounts.tokens import TokenService
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.errors import Forbidden, Unauthorized

log = structlog.get_logger("sessionary.auth")


EXTERNAL_KEY_HEADER = "x-external-user-api-key"
CSRF_HEADER = "x-csrf-token"


def _cookies(headers: Headers) -> dict[str, str]:
    return cookie_parser(headers.get("cookie", ""))


def _browser_session(headers: Headers) -> tuple[CookieKind, str] | None:
    """A registered cookie session, when the request carries no other credential."""
    if headers.get("authorization") or headers.get(EXTERNAL_KEY_HEADER, "").strip():
        return None
    return cookie_credential(_cookies(headers))


def bearer_of(headers: Headers) -> str | None:
    """The bearer token of a well-formed Authorization header, else None."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _credentials(headers: Headers) -> tuple[str | None, str | None]:
    """(bearer token, external user key header); 401 for a malformed Authorization header."""
    external = headers.get(EXTERNAL_KEY_HEADER, "").strip() or None
    header = headers.get("authorization")
    if not header:
        if external is None:
            raise Unauthorized(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        return None, external
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "Malformed Authorization header. Expected 'Bearer <key>'.", code="invalid_api_key"
        )
    return token, external


def identify(db: Session, token: str | None, external_key: str | None) -> Principal:
    """The principal behind an account key, an external user's key or an auth token, optionally
    narrowed to one external user by `x-external-user-api-key`. Reads only."""
    find = AccountStore(db).key_by_prefix
    principal: Principal | None = None
    if token is not None:
        if token.startswith(AUTH_TOKEN_TYPE):
            row = TokenService(db).authenticate(token)
            principal = Principal(
                row.account_id, None, external_user_id=row.external_user_id, token_id=row.id
            )
        else:
            principal = _key_principal(check_key(token, find))
    return _narrowed(principal, external_key, find)


def _key_principal(key: KeyCheck) -> Principal:
    return Principal(key.account_id, key.id, external_user_id=key.external_user_id)


def _narrowed(
    principal: Principal | None, external_key: str | None, find: Callable[[str], Any]
) -> Principal:
    """The principal, or the external user named by `x-external-user-api-key` (which the
    bearer, when there is one, must be allowed to speak for)."""
    if external_key is None:
        assert principal is not None
        return principal
    user_key = check_key(external_key, find)
    if user_key.external_user_id is None:
        raise Unauthorized(
            f"{EXTERNAL_KEY_HEADER} must hold an external user's key (sk_eu_...).",
            code="invalid_external_user_key",
        )
    if principal is not None:
        principal.check_reach(user_key.account_id, user_key.external_user_id, "external_user")
    return _key_principal(user_key)


class _ReadElsewhere(Exception):
    """A key read on the event loop could not be made: take the worker path."""


def _loop_credentials(headers: Headers) -> tuple[str | None, str | None] | None:
    """The API keys a request presents, when the event loop can check them; None when it needs
    the worker path (a cookie, an auth token or a client secret)."""
    if _browser_session(headers) is not None:
        return None
    token, external_key = _credentials(headers)
    if token is not None and (token.startswith(AUTH_TOKEN_TYPE) or bearer_kind_of(token)):
        return None
    return token, external_key


def _checked_on_loop(
    settings: Settings, token: str | None, external_key: str | None, find: Callable[[str], Any]
) -> Principal | None:
    """The caller of an API key request from rows read on the loop; None when the request
    needs the worker path after all (a read that failed, or a key whose `last_used_at` is due
    to be written)."""
    try:
        principal = _narrowed(
            None if token is None else _key_principal(check_key(token, find)), external_key, find
        )
    except _ReadElsewhere:
        return None
    interval = settings.key_touch_interval_seconds
    if principal.api_key_id is not None and _touch_due(principal.api_key_id, interval):
        return None
    return principal


def _on_loop(database: Database, settings: Settings, headers: Headers) -> Principal | None:
    """The common case without a hand-off to a worker, on SQLite: API keys (and an external
    user's key header) read on the event loop (`kit/loop_read.py`)."""
    credentials = _loop_credentials(headers) if database.loop_reads.enabled else None
    if credentials is None:
        return None

    def find(prefix: str) -> Any:
        read, row = AccountStore.key_by_prefix_on_loop(database.loop_reads, prefix)
        if not read:
            raise _ReadElsewhere
        return row

    return _checked_on_loop(settings, *credentials, find)


async def _awaited_on_loop(
    database: Database, settings: Settings, headers: Headers
) -> Principal | None:
    """`_on_loop` on PostgreSQL: the keys' rows awaited on the loop (`kit/async_read.py`),
    read before they are checked, since the check itself is synchronous."""
    credentials = _loop_credentials(headers) if database.async_reads.enabled else None
    if credentials is None:
        return None
    rows: dict[str, Any] = {}
    for secret in credentials:
        prefix = None if secret is None else key_prefix(secret)
        if prefix is None or prefix in rows:
            continue  # a malformed key is refused by the check, with no read
        read, rows[prefix] = await AccountStore.key_by_prefix_awaited(
            database.async_reads, prefix, database.notified
        )
        if not read:
            return None
    return _checked_on_loop(settings, *credentials, rows.__getitem__)


async def get_any_principal(request: Request) -> Principal:
    """API keys are read on the event loop (`_on_loop` on SQLite, `_awaited_on_loop` on
    PostgreSQL); everything else is resolved
    in short sessions of its own, before the route's transaction begins, in one hand-off to a
    worker thread (the lookups and the occasional `last_used_at` write together).

    The database and settings come from the app's state, not from sub-dependencies: every
    authenticated request solves this one, and each sub-dependency cost FastAPI a solve of
    its own.

    Sharing the route's session would open a SQLite write transaction at the first lookup of
    every POST, and the `last_used_at` write below would then wait on its own request.
    """
    state = request.app.state
    database: Database = state.db
    settings: Settings = state.settings
    headers, method = request.headers, request.method
    principal = _on_loop(database, settings, headers) or await _awaited_on_loop(
        database, settings, headers
    )
    if principal is None:
        principal = await database.in_worker(lambda: _resolve(database, settings, headers, method))
    structlog.contextvars.bind_contextvars(
        account_id=principal.account_id, external_user_id=principal.external_user_id
    )
    return principal


def _resolve(database: Database, settings: Settings, headers: Headers, method: str) -> Principal:
    browser = _browser_session(headers)
    if browser is not None:
        cookie_kind, value = browser
        with database.session(write=False) as db:
            return cookie_kind.authenticate(db, value, headers.get(CSRF_HEADER), method)
    token, external_key = _credentials(headers)
    kind = bearer_kind_of(token)
    if kind is not None and token is not None:
        # A write: every request with a client secret counts against its rate limit.
        with database.session() as db:
            return kind.authenticate(db, token)
    with database.point_reads() as db:
        principal = identify(db, token, external_key)
    if principal.api_key_id is not None:
        _touch(
            database, principal.api_key_id, timedelta(seconds=settings.key_touch_interval_seconds)
        )
    return principal


# key id -> when this process last wrote its last_used_at (monotonic seconds). Without it every
# request would open a write transaction only to find the stored time fresh.
_touched: dict[str, float] = {}


def _touch_due(key_id: str, interval_seconds: float) -> bool:
    return time.monotonic() - _touched.get(key_id, -math.inf) >= interval_seconds


def _touch(database: Database, key_id: str, interval: timedelta) -> None:
    if not _touch_due(key_id, interval.total_seconds()):
        return
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[key_id] = time.monotonic()
    try:
        with database.session() as db:
            AccountService(db).touch(key_id, interval)
    except Exception:  # last_used_at is bookkeeping; never fail a request over it
        log.warning("key_touch_failed", key_id=key_id, exc_info=True)


async def get_principal(
    principal: Annotated[Principal, Depends(get_any_principal)],
) -> Principal:
    """Account-level callers only: client secrets and external users are refused here."""
    if principal.session_scope is not None:
        raise Forbidden(
            "A ChatKit client secret may only make turns and reads on its own session.",
            code="client_secret_forbidden",
        )
    if principal.external_user_id is not None:
        raise Forbidden(
            "This route is for the account's own key; an external user may not call it.",
            code="account_only",
        )
    return principal


async def get_user_principal(
    principal: Annotated[Principal, Depends(get_any_principal)],
) -> Principal:
    """The account or one of its external users; a ChatKit client secret is refused."""
    if principal.session_scope is not None:
        raise Forbidden(
            "A ChatKit client secret may only make turns and reads on its own session.",
            code="client_secret_forbidden",
        )
    return principal


# Account-level routes (prompts, users, grants, profiles, ChatKit sessions).
Caller = Annotated[Principal, Depends(get_principal)]
# Routes an external user may call on its own objects (sessions, templates, credits).
UserCaller = Annotated[Principal, Depends(get_user_principal)]
# Routes that a ChatKit client secret may also call (turns and reads on its session).
SessionCaller = Annotated[Principal, Depends(get_any_principal)]


def caller_scope(database: Database) -> Callable[[Headers], str | None]:
    """Who a request speaks for, as a stable string (idempotency keys are scoped by it).

    None when the credential is missing or invalid: the route itself will answer 401/403.
    """

    def scope_of(headers: Headers) -> str | None:
        try:
            browser = _browser_session(headers)
            if browser is not None:
                with database.session(write=False) as db:
                    return browser[0].scope_of(db, browser[1])
            token, external_key = _credentials(headers)
            kind = bearer_kind_of(token)
            with database.session(write=False) as db:
                if kind is not None and token is not None:
                    return kind.scope_of(db, token)
                principal = identify(db, token, external_key)
        except (Unauthorized, Forbidden):
            return None
        if principal.external_user_id is not None:
            return f"external_user:{principal.external_user_id}"
        return f"account:{principal.account_id}"

    return scope_of
