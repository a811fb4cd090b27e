"""SQL for background responses: their owner's heartbeat, cancel flags and kept stream events.

Every process reads and writes the same rows, so a background response is visible, cancellable
and resumable from any of them; only its owner process writes its progress. Status changes are
conditional on the row still running, so the owner finishing and a sweep failing it never both
win.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update

from sessionary.conversations.models import ResponseEvent, StoredResponse
from sessionary.kit.models import utcnow
from sessionary.kit.sql import insert_rows
from sessionary.kit.store import Store

RUNNING = ("queued", "in_progress")


class BackgroundStore(Store):
    def get_response_row(self, response_id: str) -> StoredResponse | None:
        return self.db.get(StoredResponse, response_id)

    def set_status(
        self, response_id: str, status: str, payload_json: str, *, owner: str | None = None
    ) -> bool:
        """Move a running response to `status`; False when it is no longer running (or, with
        `owner`, no longer that process's)."""
        query = (
            update(StoredResponse)
            .where(StoredResponse.id == response_id, StoredResponse.status.in_(RUNNING))
            .values(status=status, payload_json=payload_json, heartbeat_at=utcnow())
        )
        if owner is not None:
            query = query.where(StoredResponse.owner_process == owner)
        return bool(self.db.execute(query).rowcount)  # type: ignore[attr-defined]

    def finish(self, row: StoredResponse) -> bool:
        """The final state of a queued response (its transcript stored); False if not running."""
        done = self.db.execute(
            update(StoredResponse)
            .where(StoredResponse.id == row.id, StoredResponse.status.in_(RUNNING))
            .values(
                status=row.status,
                payload_json=row.payload_json,
                input_message_ids=row.input_message_ids,
                has_image=row.has_image,
            )
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def heartbeat(self, owner: str, response_ids: Sequence[str]) -> list[str]:
        """Refresh this process's running responses; the ids still running and still its own."""
        if not response_ids:
            return []
        mine = (
            StoredResponse.id.in_(list(response_ids)),
            StoredResponse.owner_process == owner,
            StoredResponse.status.in_(RUNNING),
        )
        self.db.execute(update(StoredResponse).where(*mine).values(heartbeat_at=utcnow()))
        return list(self.db.scalars(select(StoredResponse.id).where(*mine)))

    def cancel_requested(self, response_ids: Sequence[str]) -> list[str]:
        if not response_ids:
            return []
        return list(
            self.db.scalars(
                select(StoredResponse.id).where(
                    StoredResponse.id.in_(list(response_ids)),
                    StoredResponse.cancel_requested.is_(True),
                )
            )
        )

    def request_cancel(self, response_id: str) -> bool:
        done = self.db.execute(
            update(StoredResponse)
            .where(StoredResponse.id == response_id, StoredResponse.status.in_(RUNNING))
            .values(cancel_requested=True)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def stale(self, before: datetime, limit: int = 100) -> list[StoredResponse]:
        """Running background responses whose owner has not been heard of since `before`."""
        return list(
            self.db.scalars(
                select(StoredResponse)
                .where(
                    StoredResponse.background.is_(True),
                    StoredResponse.status.in_(RUNNING),
                    StoredResponse.heartbeat_at < before,
                )
                .order_by(StoredResponse.id)
                .limit(limit)
            )
        )

    # Events

    def add_events(self, rows: Sequence[ResponseEvent]) -> None:
        insert_rows(self.db, rows)

    def events_after(self, response_id: str, after: int, limit: int = 500) -> list[ResponseEvent]:
        return list(
            self.db.scalars(
                select(ResponseEvent)
                .where(
                    ResponseEvent.response_id == response_id,
                    ResponseEvent.sequence_number > after,
                )
                .order_by(ResponseEvent.sequence_number)
                .limit(limit)
            )
        )

    def first_event(self, response_id: str) -> int | None:
        """The lowest sequence number still kept (None: none kept)."""
        first: int | None = self.db.scalar(
            select(func.min(ResponseEvent.sequence_number)).where(
                ResponseEvent.response_id == response_id
            )
        )
        return first

    def purge_events(self, before: datetime) -> int:
        """Forget the events written before `before`, except those of running responses."""
        running = select(StoredResponse.id).where(StoredResponse.status.in_(RUNNING))
        done = self.db.execute(
            delete(ResponseEvent).where(
                ResponseEvent.created_at < before, ResponseEvent.response_id.not_in(running)
            )
        )
        return int(done.rowcount)  # type: ignore[attr-defined]
