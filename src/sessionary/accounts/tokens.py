"""Login tokens and auth tokens: how a platform hands a session to its own client app.

The platform (account key) asks for a login token for itself or for one of its external users;
the client app exchanges it, once and within minutes, for an auth token it then sends as
`Authorization: Bearer`. Both are stored as SHA-256 hashes behind a lookup prefix, like keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import (
    AUTH_TOKEN_TYPE,
    LOGIN_TOKEN_TYPE,
    generate_key,
    key_matches,
    prefix_of,
)
from sessionary.accounts.models import ClientToken
from sessionary.accounts.store import AccountStore
from sessionary.kit.errors import InvalidRequest, Unauthorized
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow


@dataclass(frozen=True)
class IssuedToken:
    row: ClientToken
    plaintext: str


class TokenService:
    def __init__(self, session: Session) -> None:
        self.store = AccountStore(session)

    def _issue(
        self,
        kind: str,
        token_type: str,
        caller: Principal,
        ttl: timedelta,
        redirect: str | None = None,
    ) -> IssuedToken:
        new = generate_key(token_type)
        now = utcnow()
        row = self.store.add_token(
            ClientToken(
                id=new_id("tok"),
                kind=kind,
                prefix=new.prefix,
                token_hash=new.key_hash,
                account_id=caller.account_id,
                external_user_id=caller.external_user_id,
                redirect=redirect,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        return IssuedToken(row, new.plaintext)

    def create_login_token(
        self, caller: Principal, ttl: timedelta, redirect: str | None = None
    ) -> IssuedToken:
        """A single-use login token for the caller (the account, or the user it acts for)."""
        if redirect is not None and (len(redirect) > 2048 or not redirect.startswith("/")):
            raise InvalidRequest(
                "redirect must be a path on the client app, starting with '/'.", param="redirect"
            )
        return self._issue("login", LOGIN_TOKEN_TYPE, caller, ttl, redirect)

    def _find(self, plaintext: str, kind: str, token_type: str, param: str) -> ClientToken:
        prefix = prefix_of(plaintext, token_type)
        row = self.store.token_by_prefix(prefix) if prefix else None
        if row is None or row.kind != kind or not key_matches(plaintext, row.token_hash):
            raise Unauthorized(f"Invalid {param}.", code=f"invalid_{kind}_token")
        return row

    def exchange(self, login_token: str, ttl: timedelta) -> IssuedToken:
        """Spend a login token (once, before it expires) for a new auth token."""
        row = self._find(login_token, "login", LOGIN_TOKEN_TYPE, "loginToken")
        now = utcnow()
        if row.expires_at <= now:
            raise Unauthorized("This login token has expired.", code="expired_login_token")
        if row.used_at is not None or not self.store.use_login_token(row.id, now):
            raise Unauthorized("This login token was already used.", code="used_login_token")
        caller = Principal(row.account_id, None, external_user_id=row.external_user_id)
        return self._issue("auth", AUTH_TOKEN_TYPE, caller, ttl)

    def authenticate(self, auth_token: str) -> ClientToken:
        """The live auth token behind a presented bearer, or 401."""
        row = self._find(auth_token, "auth", AUTH_TOKEN_TYPE, "auth token")
        if row.revoked_at is not None:
            raise Unauthorized("This auth token has been revoked.", code="revoked_auth_token")
        if row.expires_at <= utcnow():
            raise Unauthorized("This auth token has expired.", code="expired_auth_token")
        return row

    def revoke(self, caller: Principal, auth_token: str) -> ClientToken:
        """Revoke an auth token: its own bearer, or any token of the calling account."""
        row = self._find(auth_token, "auth", AUTH_TOKEN_TYPE, "auth token")
        caller.check_reach(row.account_id, row.external_user_id, "token", "authToken")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row
