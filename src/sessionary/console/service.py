"""Console sign-in: by account key or by a one-time link, into a browser session.

The browser holds a random session token in an HttpOnly, SameSite=Strict cookie; the server
keeps only its SHA-256. Changes also need a CSRF token, derived from the session token with
HMAC, so a page of this origin can send it and no other site can compute it. A session ends at
sign-out, at its expiry, or as soon as the key it was opened with is revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import EXTERNAL_KEY_TYPE, hash_key
from sessionary.accounts.models import Account
from sessionary.accounts.service import AccountService
from sessionary.accounts.store import AccountStore
from sessionary.console.models import ConsoleLink, ConsoleSession
from sessionary.console.store import ConsoleStore
from sessionary.kit.errors import Forbidden, NotFound, Unauthorized
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow

COOKIE = "sessionary_console"
LINK_TTL = timedelta(minutes=10)
SESSION_TTL = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_BYTES = 32


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"sessionary-console-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Opened:
    """A new browser session: the token for the cookie exists only here."""

    row: ConsoleSession
    token: str


@dataclass(frozen=True)
class Issued:
    row: ConsoleLink
    token: str


class ConsoleService:
    def __init__(self, db: Session) -> None:
        self.store = ConsoleStore(db)
        self.accounts = AccountService(db)
        self.account_rows = AccountStore(db)

    # Links

    def issue_link(self, account_id: str, *, operator: bool, ttl: timedelta = LINK_TTL) -> Issued:
        self.accounts.get_account(account_id)
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = utcnow()
        row = self.store.add(
            ConsoleLink(
                id=new_id("clink"),
                token_hash=hash_key(token),
                account_id=account_id,
                operator=operator,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        return Issued(row, token)

    def redeem_link(self, token: str) -> Opened:
        """A session from a link, once: a used, expired or unknown link is the same 401."""
        link = self.store.link_by_hash(hash_key(token))
        now = utcnow()
        if link is None or link.expires_at <= now or not self.store.use_link(link.id, now):
            raise Unauthorized(
                "This sign-in link is unknown, expired or already used. Ask for a new one "
                "with `sessionary console-link`.",
                code="invalid_console_link",
            )
        return self._open(link.account_id, api_key_id=None, operator=link.operator)

    # Keys

    def sign_in(self, api_key: str) -> Opened:
        """A session for an account key (an external user's key opens no console)."""
        if api_key.startswith(EXTERNAL_KEY_TYPE):
            raise Unauthorized("Sign in with an account key (sk_sy_...).", param="api_key")
        key = self.accounts.authenticate(api_key.strip())
        return self._open(key.account_id, api_key_id=key.id, operator=False)

    def _open(self, account_id: str, *, api_key_id: str | None, operator: bool) -> Opened:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = utcnow()
        row = self.store.add(
            ConsoleSession(
                id=new_id("csess"),
                token_hash=hash_key(token),
                account_id=account_id,
                api_key_id=api_key_id,
                operator=operator,
                created_at=now,
                expires_at=now + SESSION_TTL,
            )
        )
        return Opened(row, token)

    # Sessions

    def find(self, token: str) -> ConsoleSession | None:
        """The live session of a cookie, or None (ended, expired, its key revoked)."""
        row = self.store.session_by_hash(hash_key(token))
        if row is None or row.ended_at is not None or row.expires_at <= utcnow():
            return None
        if row.api_key_id is not None:
            key = self.account_rows.get_key(row.api_key_id)
            if key is None or key.revoked_at is not None:
                return None
        if self.account_rows.get_account(row.account_id) is None:
            return None
        return row

    def live(self, token: str) -> ConsoleSession:
        row = self.find(token)
        if row is None:
            raise Unauthorized("The console session has ended: sign in again.", code="signed_out")
        return row

    def principal(self, token: str, csrf: str | None, method: str) -> Principal:
        row = self.live(token)
        if method.upper() not in SAFE_METHODS and not (
            csrf and hmac.compare_digest(csrf, csrf_token(token))
        ):
            raise Forbidden("Missing or wrong CSRF token (x-csrf-token).", code="csrf_failed")
        return Principal(row.account_id, row.api_key_id)

    def sign_out(self, token: str) -> None:
        row = self.store.session_by_hash(hash_key(token))
        if row is not None and row.ended_at is None:
            row.ended_at = utcnow()

    def switch_account(self, token: str, account_id: str) -> ConsoleSession:
        """An operator session shows another account; any other session may not."""
        row = self.live(token)
        if not row.operator:
            raise Forbidden("Only an operator session may switch accounts.", param="account_id")
        if self.account_rows.get_account(account_id) is None:
            raise NotFound(f"No account '{account_id}'.", param="account_id")
        row.account_id = account_id
        return row

    def accounts_for(self, row: ConsoleSession) -> list[Account]:
        """The accounts a session may show: every one for an operator, else its own."""
        if row.operator:
            return self.account_rows.list_accounts()
        return [self.accounts.get_account(row.account_id)]


class ConsoleCookies:
    """The console's cookie as a credential of the public API (registered in create_app)."""

    cookie = COOKIE

    def authenticate(self, db: Session, value: str, csrf: str | None, method: str) -> Principal:
        return ConsoleService(db).principal(value, csrf, method)

    def scope_of(self, db: Session, value: str) -> str | None:
        row = ConsoleService(db).find(value)
        return f"account:{row.account_id}" if row else None
