"""Login tokens and auth tokens: how a platform hands a session to its own client app.

The platform (account key) asks for a login token for itself or for one of its external users;
the client app exchanges it, once and within minutes, for an auth token it then sends as
`Authorization: Bearer`. Both are stored as SHA-256 hashes behind a lookup prefix, like keys.

Tokens die together: each records the API key at the root of its chain and the token that
minted it. A token is refused once its root key is revoked or any auth token above it is
revoked, and a token never outlives the token that minted it, so an auth token cannot renew
itself forever through login tokens.
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
from sessionary.kit.errors import InvalidRequest, NotFound, Unauthorized
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow

# How many tokens may stand between a token and its API key.
MAX_CHAIN = 8


@dataclass(frozen=True)
class IssuedToken:
    row: ClientToken
    plaintext: str


class TokenService:
    def __init__(self, db: Session) -> None:
        self.store = AccountStore(db)

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
        expires_at = now + ttl
        root_key = caller.api_key_id
        if caller.token_id is not None:
            parent = self.store.get_token(caller.token_id)
            if parent is None:
                raise Unauthorized("The auth token behind this request no longer exists.")
            minter = self._nearest_auth(parent)
            if minter is not None:  # never outlive the auth token this chain started from
                expires_at = min(expires_at, minter.expires_at)
            root_key = parent.api_key_id or root_key
            if self._depth(parent) >= MAX_CHAIN:
                raise InvalidRequest(
                    "This token descends from too many tokens to mint another; use an API key.",
                    code="token_chain_too_long",
                )
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
                expires_at=expires_at,
                api_key_id=root_key,
                parent_token_id=caller.token_id,
            )
        )
        return IssuedToken(row, new.plaintext)

    def _nearest_auth(self, row: ClientToken | None) -> ClientToken | None:
        """The row itself when it is an auth token, else the closest auth token above it."""
        steps = 0
        while row is not None and row.kind != "auth" and steps <= MAX_CHAIN:
            row = self.store.get_token(row.parent_token_id) if row.parent_token_id else None
            steps += 1
        return row if row is not None and row.kind == "auth" else None

    def _depth(self, row: ClientToken) -> int:
        depth = 0
        while row.parent_token_id is not None and depth <= MAX_CHAIN:
            parent = self.store.get_token(row.parent_token_id)
            if parent is None:
                break
            row, depth = parent, depth + 1
        return depth

    def _check_lineage(self, row: ClientToken) -> None:
        """401 when the root key or any auth token above this one was revoked."""
        if row.api_key_id is not None:
            key = self.store.get_key(row.api_key_id)
            if key is None or key.revoked_at is not None:
                raise Unauthorized(
                    "The API key this token descends from has been revoked.",
                    code="revoked_auth_token",
                )
        seen = 0
        current = row
        while current.parent_token_id is not None and seen <= MAX_CHAIN:
            parent = self.store.get_token(current.parent_token_id)
            if parent is None:
                break
            if parent.revoked_at is not None:
                raise Unauthorized(
                    "A token this one descends from has been revoked.", code="revoked_auth_token"
                )
            current, seen = parent, seen + 1

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
        self._check_lineage(row)
        # The auth token descends from the login token (and through it from its minter).
        caller = Principal(
            row.account_id, row.api_key_id, external_user_id=row.external_user_id, token_id=row.id
        )
        return self._issue("auth", AUTH_TOKEN_TYPE, caller, ttl)

    def authenticate(self, auth_token: str) -> ClientToken:
        """The live auth token behind a presented bearer, or 401."""
        row = self._find(auth_token, "auth", AUTH_TOKEN_TYPE, "auth token")
        if row.revoked_at is not None:
            raise Unauthorized("This auth token has been revoked.", code="revoked_auth_token")
        if row.expires_at <= utcnow():
            raise Unauthorized("This auth token has expired.", code="expired_auth_token")
        self._check_lineage(row)
        return row

    def lineage_is_live(self, api_key_id: str | None, token_id: str | None) -> bool:
        """Whether what a credential was made with (a key, an auth token) still works: a ChatKit
        client secret lives only as long as the credential that created it."""
        if api_key_id is not None:
            key = self.store.get_key(api_key_id)
            if key is None or key.revoked_at is not None:
                return False
        if token_id is not None:
            row = self.store.get_token(token_id)
            if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
                return False
            return self._alive(row)
        return True

    def live_tokens(self, caller: Principal) -> list[ClientToken]:
        """The account's auth tokens that still work (expired and revoked ones left out)."""
        rows = self.store.live_auth_tokens(caller.account_id, utcnow())
        return [row for row in rows if self._alive(row)]

    def _alive(self, row: ClientToken) -> bool:
        try:
            self._check_lineage(row)
        except Unauthorized:
            return False
        return True

    def revoke_by_id(self, caller: Principal, token_id: str) -> ClientToken:
        """Revoke one of the account's auth tokens by id (and with it its descendants)."""
        row = self.store.get_token(token_id)
        if row is None or row.kind != "auth":
            raise NotFound(f"No auth token '{token_id}'.", param="token_id")
        caller.check_reach(row.account_id, row.external_user_id, "token", "token_id")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row

    def revoke(self, caller: Principal, auth_token: str) -> ClientToken:
        """Revoke an auth token: its own bearer, or any token of the calling account."""
        row = self._find(auth_token, "auth", AUTH_TOKEN_TYPE, "auth token")
        caller.check_reach(row.account_id, row.external_user_id, "token", "authToken")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row
