"""Rules for accounts and keys: keys are shown once, stored hashed, revocable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import (
    ACCOUNT_KEY_TYPE,
    EXTERNAL_KEY_TYPE,
    generate_key,
    key_matches,
    prefix_of,
)
from sessionary.accounts.models import Account, ApiKey
from sessionary.accounts.store import AccountStore
from sessionary.kit.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow
from sessionary.kit.notified import drop_at_commit

DEFAULT_ACCOUNT_NAME = "default"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: the only moment its plaintext exists outside the caller's hands."""

    key: ApiKey
    plaintext: str


@dataclass(frozen=True)
class KeyCheck:
    """Who a presented key speaks for: what every request needs of its key, nothing more."""

    id: str
    account_id: str
    external_user_id: str | None


def key_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented account or external user key; None when malformed."""
    key_type = EXTERNAL_KEY_TYPE if plaintext.startswith(EXTERNAL_KEY_TYPE) else ACCOUNT_KEY_TYPE
    return prefix_of(plaintext, key_type)


def check_key(plaintext: str, find: Callable[[str], Any | None]) -> KeyCheck:
    """The live key behind a presented secret, or 401; `find` reads a key's row by its prefix
    (in a session, or on the event loop: `principal.py`)."""
    prefix = key_prefix(plaintext)
    if prefix is None:
        raise Unauthorized("Malformed API key.")
    key = find(prefix)
    if key is None or not key_matches(plaintext, key.key_hash):
        raise Unauthorized("Invalid API key.")
    if key.revoked_at is not None:
        raise Unauthorized("This API key has been revoked.", code="revoked_api_key")
    return KeyCheck(key.id, key.account_id, key.external_user_id)


class AccountService:
    def __init__(self, db: Session) -> None:
        self.store = AccountStore(db)

    def create_account(self, name: str) -> tuple[Account, IssuedKey]:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest("Account name must be 1 to 200 characters.", param="name")
        account = self.store.add_account(Account(id=new_id("acct"), name=name, created_at=utcnow()))
        return account, self.create_key(account.id, name="default")

    def ensure_default_account(self) -> tuple[Account, IssuedKey | None]:
        """The first account, created with a key when the database has none."""
        existing = self.store.first_account()
        if existing is not None:
            return existing, None
        return self.create_account(DEFAULT_ACCOUNT_NAME)

    def get_account(self, account_id: str) -> Account:
        account = self.store.get_account(account_id)
        if account is None:
            raise NotFound(f"No account '{account_id}'.", param="account_id")
        return account

    def system_prompt(self, account_id: str) -> str | None:
        """The account's own system prompt, if it set one."""
        return self.store.system_prompt(account_id)

    def set_assistant(
        self, account_id: str, *, system_prompt: str | None, model: str | None
    ) -> Account:
        """Store or clear (None / "") the account's prompt; change its model when one is given."""
        account = self.get_account(account_id)
        account.system_prompt = system_prompt or None
        drop_at_commit(self.store.db, account_id)  # kept prompts (`kit/notified.py`)
        if model:
            account.assistant_model = model
        return account

    def create_key(
        self, account_id: str, name: str | None = None, *, external_user_id: str | None = None
    ) -> IssuedKey:
        """A new key for the account, or for one of its external users (type sk_eu_)."""
        self.get_account(account_id)
        new = generate_key(EXTERNAL_KEY_TYPE if external_user_id else ACCOUNT_KEY_TYPE)
        key = self.store.add_key(
            ApiKey(
                id=new_id("key"),
                account_id=account_id,
                name=name,
                prefix=new.prefix,
                key_hash=new.key_hash,
                created_at=utcnow(),
                external_user_id=external_user_id,
            )
        )
        return IssuedKey(key, new.plaintext)

    def live_external_keys(self, external_user_id: str) -> list[ApiKey]:
        return self.store.live_keys_of_external_user(external_user_id)

    def rotate_external_key(self, account_id: str, external_user_id: str) -> IssuedKey:
        """Revoke the user's live keys and their tokens, and issue a new key, in one transaction."""
        for old in self.store.live_keys_of_external_user(external_user_id):
            old.revoked_at = utcnow()
        drop_at_commit(self.store.db, account_id)  # kept keys (`kit/notified.py`)
        self.store.revoke_tokens_of_user(external_user_id, utcnow())
        return self.create_key(account_id, "external user", external_user_id=external_user_id)

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        return self.store.list_keys(account_id)

    def issue_key_for(self, caller: Principal, name: str | None) -> IssuedKey:
        """A new account key at a caller's request; an auth token may not mint one (the key
        would outlive the token, which must die with its root key)."""
        if caller.token_id is not None:
            raise Forbidden(
                "An auth token may not create API keys: use an API key.",
                code="token_cannot_mint_keys",
            )
        return self.create_key(caller.account_id, name)

    def account_keys(self, account_id: str) -> list[ApiKey]:
        """The account's own keys (its external users' keys are managed by rotation)."""
        return [k for k in self.store.list_keys(account_id) if k.external_user_id is None]

    def revoke_own_key(self, caller: Principal, key_id: str) -> ApiKey:
        """Revoke one of the caller's account keys: 404 when missing, 403 for another's."""
        key = self.store.get_key(key_id)
        if key is None or key.external_user_id is not None:
            raise NotFound(f"No API key '{key_id}'.", param="key_id")
        caller.check_reach(key.account_id, None, "api_key", param="key_id")
        return self.revoke_key(key_id)

    def revoke_key(self, key_id: str) -> ApiKey:
        key = self.store.get_key(key_id)
        if key is None:
            raise NotFound(f"No API key '{key_id}'.", param="key_id")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            drop_at_commit(self.store.db, key.account_id)  # kept keys (`kit/notified.py`)
        return key

    def authenticate(self, plaintext: str) -> KeyCheck:
        """The live key (an account's or an external user's) behind a presented secret, or 401."""
        return check_key(plaintext, self.store.key_by_prefix)

    def touch(self, key_id: str, interval: timedelta) -> None:
        now = utcnow()
        self.store.touch_key(key_id, now, now - interval)
