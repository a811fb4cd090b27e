"""SQL for console links and sessions: rows are found by the hash of their token."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from sessionary.console.models import ConsoleLink, ConsoleSession
from sessionary.kit.store import Store


class ConsoleStore(Store):
    def link_by_hash(self, token_hash: str) -> ConsoleLink | None:
        return self.db.scalars(
            select(ConsoleLink).where(ConsoleLink.token_hash == token_hash)
        ).first()

    def use_link(self, link_id: str, now: datetime) -> bool:
        """Mark a link used; False when another request used it first (single use)."""
        result = self.db.execute(
            update(ConsoleLink)
            .where(ConsoleLink.id == link_id)
            .where(ConsoleLink.used_at.is_(None))
            .values(used_at=now)
            .returning(ConsoleLink.id)
        )
        return result.first() is not None

    def session_by_hash(self, token_hash: str) -> ConsoleSession | None:
        return self.db.scalars(
            select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
        ).first()
