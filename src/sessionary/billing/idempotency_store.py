"""SQL for idempotency records: a request's key, its state and its kept answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, update

from sessionary.billing.models import IdempotencyRecord
from sessionary.kit.sql import insert_ignoring_conflict
from sessionary.kit.store import Store


class IdempotencyStore(Store):
    def get(self, scope: str, key: str) -> IdempotencyRecord | None:
        return self.db.get(IdempotencyRecord, (scope, key), populate_existing=True)

    def try_insert(self, record: IdempotencyRecord) -> bool:
        """Insert unless the (scope, key) exists; True when this call created it."""
        values = {c.name: getattr(record, c.key) for c in IdempotencyRecord.__table__.columns}
        return insert_ignoring_conflict(self.db, IdempotencyRecord, values)

    def take_over(
        self, scope: str, key: str, *, stale_before: datetime, values: Mapping[str, object]
    ) -> bool:
        """Reclaim a record whose answer expired or whose running request was abandoned."""
        result = self.db.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
            .where(
                (IdempotencyRecord.expires_at < stale_before)
                | (
                    (IdempotencyRecord.state == "running")
                    & (IdempotencyRecord.lease_until < stale_before)
                )
            )
            .values(**values)
        )
        return bool(getattr(result, "rowcount", 0))

    def complete(self, scope: str, key: str, status: int, headers: str, body: bytes) -> None:
        self.db.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
            .values(state="done", status_code=status, headers=headers, body=body)
        )

    def remove(self, scope: str, key: str) -> None:
        self.db.execute(
            delete(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope)
            .where(IdempotencyRecord.key == key)
        )

    def purge_expired(self, now: datetime) -> int:
        result = self.db.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
        )
        return int(getattr(result, "rowcount", 0))
