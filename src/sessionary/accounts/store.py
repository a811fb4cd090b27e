"""SQL for accounts and API keys.

The key lookup runs on every request: it reads the few columns a check needs with a statement
built once, on the session's connection (a tenth of what loading an ORM row costs), or on SQLite
straight from the event loop (`kit/loop_read.py`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update

from sessionary.accounts.models import Account, ApiKey, ClientToken
from sessionary.kit.async_read import AsyncReader
from sessionary.kit.loop_read import LoopReader, loop_reader_of
from sessionary.kit.notified import NotifiedCache, notified_of
from sessionary.kit.raw_sql import run
from sessionary.kit.store import Store

_KEYS = cast(Table, ApiKey.__table__)
_ACCOUNTS = cast(Table, Account.__table__)
_SYSTEM_PROMPT = select(_ACCOUNTS.c.system_prompt).where(_ACCOUNTS.c.id == bindparam("p_id"))
_KEY_BY_PREFIX = select(
    _KEYS.c.id, _KEYS.c.account_id, _KEYS.c.external_user_id, _KEYS.c.key_hash, _KEYS.c.revoked_at
).where(_KEYS.c.prefix == bindparam("p_prefix"))


class AccountStore(Store):
    def add_account(self, account: Account) -> Account:
        self.db.add(account)
        self.db.flush()
        return account

    def get_account(self, account_id: str) -> Account | None:
        return self.db.get(Account, account_id)

    def system_prompt(self, account_id: str) -> str | None:
        """The account's prompt alone, on the connection's cursor (`kit/raw_sql.py`): every turn
        needs it, and loading the account as an ORM object cost as much as the key check. Kept
        until a change is notified on PostgreSQL (`kit/notified.py`)."""
        kept = notified_of(self.db)
        hit, value = kept.get(("prompt", account_id)) if kept else (False, None)
        if hit:  # kept as a 1-tuple: an account without a prompt is kept too
            return cast(tuple[str | None], value)[0]
        epoch = kept.epoch() if kept else 0
        params = {"p_id": account_id}
        reads = loop_reader_of(self.db)  # SQLite, on the loop: no connection checked out
        read, found = reads.first(_SYSTEM_PROMPT, params) if reads else (False, None)
        if not read:
            found = run(self.db.connection(), _SYSTEM_PROMPT, params).first()
        if found is None:
            return None
        prompt = None if found.system_prompt is None else str(found.system_prompt)
        if kept:
            kept.put(("prompt", account_id), (prompt,), epoch, account_id)
        return prompt

    def first_account(self) -> Account | None:
        return self.db.scalars(select(Account).order_by(Account.id).limit(1)).first()

    def count_accounts(self) -> int:
        return self.db.scalar(select(func.count()).select_from(Account)) or 0

    def list_accounts(self) -> list[Account]:
        return list(self.db.scalars(select(Account).order_by(Account.id)))

    def add_key(self, key: ApiKey) -> ApiKey:
        self.db.add(key)
        self.db.flush()
        return key

    def key_by_prefix(self, prefix: str) -> Any | None:
        """The key's id, account_id, external_user_id, key_hash and revoked_at (a row), or None."""
        return self.db.connection().execute(_KEY_BY_PREFIX, {"p_prefix": prefix}).first()

    @staticmethod
    def key_by_prefix_on_loop(reads: LoopReader, prefix: str) -> tuple[bool, Any | None]:
        """`key_by_prefix` on the event loop: (False, None) when it must be read in a session."""
        return reads.first(_KEY_BY_PREFIX, {"p_prefix": prefix})

    @staticmethod
    async def key_by_prefix_awaited(
        reads: AsyncReader, prefix: str, kept: NotifiedCache | None = None
    ) -> tuple[bool, Any | None]:
        """`key_by_prefix` awaited on the event loop (PostgreSQL), or kept from an earlier read
        until a change is notified (`kit/notified.py`): (False, None) when it must be read in a
        session."""
        hit, row = kept.get(("key", prefix)) if kept else (False, None)
        if hit:
            return True, row
        epoch = kept.epoch() if kept else 0
        read, row = await reads.first(_KEY_BY_PREFIX, {"p_prefix": prefix})
        if read and kept and row is not None:
            kept.put(("key", prefix), row, epoch, row.account_id)
        return read, row

    def get_key(self, key_id: str) -> ApiKey | None:
        return self.db.get(ApiKey, key_id)

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.id)
        if account_id is not None:
            query = query.where(ApiKey.account_id == account_id)
        return list(self.db.scalars(query))

    def touch_key(self, key_id: str, when: datetime, older_than: datetime) -> None:
        """Record use, but only when the stored time is stale, so most calls write nothing."""
        self.db.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < older_than))
            .values(last_used_at=when)
        )

    def live_keys_of_external_user(self, external_user_id: str) -> list[ApiKey]:
        return list(
            self.db.scalars(
                select(ApiKey)
                .where(ApiKey.external_user_id == external_user_id)
                .where(ApiKey.revoked_at.is_(None))
                .order_by(ApiKey.id)
            )
        )

    # Login and auth tokens

    def add_token(self, token: ClientToken) -> ClientToken:
        self.db.add(token)
        self.db.flush()
        return token

    def token_by_prefix(self, prefix: str) -> ClientToken | None:
        return self.db.scalars(select(ClientToken).where(ClientToken.prefix == prefix)).first()

    def get_token(self, token_id: str) -> ClientToken | None:
        return self.db.get(ClientToken, token_id)

    def live_auth_tokens(self, account_id: str, now: datetime) -> list[ClientToken]:
        return list(
            self.db.scalars(
                select(ClientToken)
                .where(ClientToken.account_id == account_id)
                .where(ClientToken.kind == "auth")
                .where(ClientToken.revoked_at.is_(None))
                .where(ClientToken.expires_at > now)
                .order_by(ClientToken.id)
            )
        )

    def revoke_tokens_of_user(self, external_user_id: str, now: datetime) -> int:
        """End every token of one external user (its key was rotated)."""
        result = self.db.execute(
            update(ClientToken)
            .where(ClientToken.external_user_id == external_user_id)
            .where(ClientToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(getattr(result, "rowcount", 0))

    def use_login_token(self, token_id: str, now: datetime) -> bool:
        """Mark a login token used; False when another request used it first (single use)."""
        result = self.db.execute(
            update(ClientToken)
            .where(ClientToken.id == token_id)
            .where(ClientToken.used_at.is_(None))
            .values(used_at=now)
            .returning(ClientToken.id)
        )
        return result.first() is not None
