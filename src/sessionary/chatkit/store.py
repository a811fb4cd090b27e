"""SQL for ChatKit sessions and the sliding-window rate limiter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select

from sessionary.chatkit.models import ChatKitSession, RateLimitHit
from sessionary.kit.ids import new_id
from sessionary.kit.pagination import PageParams
from sessionary.kit.store import Store, page


class ChatKitStore(Store):
    def get(self, session_id: str) -> ChatKitSession | None:
        return self.db.get(ChatKitSession, session_id)

    def by_prefix(self, prefix: str, *, lock: bool = False) -> ChatKitSession | None:
        query = select(ChatKitSession).where(ChatKitSession.secret_prefix == prefix)
        if (
            lock
        ):  # PostgreSQL: serialise the rate check per secret; SQLite's write lock already does
            query = query.with_for_update()
        return self.db.scalars(query).first()

    def ids_of(self, account_id: str, user: str | None) -> Select[Any]:
        """The ids of the account's ChatKit sessions (of one user), as a subquery."""
        query = select(ChatKitSession.id).where(ChatKitSession.account_id == account_id)
        if user is not None:
            query = query.where(ChatKitSession.user == user)
        return query

    def page_of_account(
        self, account_id: str, user: str | None, params: PageParams
    ) -> tuple[list[ChatKitSession], bool]:
        """One page of the account's ChatKit sessions (of one user), in id order."""
        query = select(ChatKitSession).where(ChatKitSession.account_id == account_id)
        if user is not None:
            query = query.where(ChatKitSession.user == user)
        return page(self.db, query, ChatKitSession.id, params)

    def users_of(self, session_ids: Sequence[str]) -> dict[str, str]:
        rows = self.db.execute(
            select(ChatKitSession.id, ChatKitSession.user).where(
                ChatKitSession.id.in_(list(session_ids))
            )
        )
        return {session_id: user for session_id, user in rows}

    def hits_since(self, bucket: str, since: datetime) -> tuple[int, datetime | None]:
        count, oldest = self.db.execute(
            select(func.count(), func.min(RateLimitHit.at))
            .where(RateLimitHit.bucket == bucket)
            .where(RateLimitHit.at > since)
        ).one()
        return int(count), oldest

    def add_hit(self, bucket: str, at: datetime) -> None:
        self.db.add(RateLimitHit(id=new_id("hit"), bucket=bucket, at=at))
        self.db.flush()

    def prune_hits(self, bucket: str, before: datetime) -> None:
        self.db.execute(
            delete(RateLimitHit)
            .where(RateLimitHit.bucket == bucket)
            .where(RateLimitHit.at <= before)
        )
