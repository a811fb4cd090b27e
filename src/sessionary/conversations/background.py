"""Rules for stored background responses, whichever process runs them.

A background response is stored when queued, so every process can answer for it: retrieve it,
ask it to stop, replay its events. Its owner process moves it through `in_progress` to its end;
a response whose owner stopped beating is failed by any process (`fail_stale`), so a server
killed mid-turn never leaves a response running forever.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.conversations.background_store import RUNNING, BackgroundStore
from sessionary.conversations.models import ResponseEvent, StoredResponse
from sessionary.conversations.service import ConversationService
from sessionary.kit.errors import Conflict, InvalidRequest
from sessionary.kit.models import utcnow

OWNER_DIED = {
    "code": "server_error",
    "message": "The server process running this response stopped; what it produced is charged.",
}
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(frozen=True)
class Snapshot:
    """A stored response as one read saw it."""

    payload: dict[str, Any]
    status: str
    background: bool

    @property
    def running(self) -> bool:
        return self.status in RUNNING


def snapshot(row: StoredResponse) -> Snapshot:
    return Snapshot(json.loads(row.payload_json), row.status, bool(row.background))


class BackgroundResponses:
    def __init__(self, db: Session) -> None:
        self.store = BackgroundStore(db)
        self.conversations = ConversationService(db)

    # The owner's writes

    def queue(self, values: Mapping[str, Any]) -> None:
        """A queued response, given as its column values."""
        self.conversations.store_response(values)

    def finish(self, row: StoredResponse) -> None:
        """The final state of a queued response, written with its transcript; 409 (and the
        transcript rolled back) when it stopped running meanwhile (cancelled, or failed by a
        sweep that took its owner for dead)."""
        if not self.store.finish(row):
            raise Conflict(f"The response '{row.id}' is no longer running.", param="response_id")

    def set_status(self, response_id: str, payload: dict[str, Any], owner: str) -> bool:
        """The owner's move of a running response (in_progress, or its end when no transcript
        is stored); False when another process failed it meanwhile."""
        return self.store.set_status(
            response_id, payload["status"], json.dumps(payload), owner=owner
        )

    def heartbeat(self, owner: str, response_ids: Sequence[str]) -> list[str]:
        return self.store.heartbeat(owner, response_ids)

    def cancel_requested(self, response_ids: Sequence[str]) -> list[str]:
        return self.store.cancel_requested(response_ids)

    def add_events(self, response_id: str, events: Sequence[tuple[int, str, str]]) -> None:
        now = utcnow()
        self.store.add_events(
            [
                ResponseEvent(
                    response_id=response_id,
                    sequence_number=number,
                    kind=kind,
                    data=data,
                    created_at=now,
                )
                for number, kind, data in events
            ]
        )

    # Anyone's

    def read(self, caller: Principal, response_id: str) -> Snapshot:
        return snapshot(self.conversations.owned_response(caller, response_id))

    def request_cancel(self, caller: Principal, response_id: str) -> Snapshot:
        """Ask the owner to stop; a finished response is answered as it is (cancelling twice is
        harmless). Only background responses can be cancelled: the others ran in a request."""
        row = self.conversations.owned_response(caller, response_id)
        if not row.background:
            raise InvalidRequest(
                "Only responses created with background=true can be cancelled.",
                param="response_id",
                code="response_not_background",
            )
        if row.status in RUNNING:
            self.store.request_cancel(row.id)
        return snapshot(row)

    def status_of(self, response_id: str) -> Snapshot | None:
        row = self.store.get_response_row(response_id)
        return snapshot(row) if row is not None else None

    def replayable(self, caller: Principal, response_id: str, after: int) -> None:
        """400 unless the response's events from `after` on are kept."""
        row = self.conversations.owned_response(caller, response_id)
        if not row.background:
            raise InvalidRequest(
                "Only a background response can be streamed again; retrieve it without stream.",
                param="stream",
                code="response_not_background",
            )
        first = self.store.first_event(row.id)
        if row.status not in RUNNING and (first is None or first > after + 1):
            raise InvalidRequest(
                "This response's events are no longer kept (they are kept for a while after it "
                "ends); retrieve it without stream.",
                param="stream",
                code="stream_expired",
            )

    def events_after(self, response_id: str, after: int) -> list[ResponseEvent]:
        return self.store.events_after(response_id, after)

    # Sweeps

    def fail_stale(self, before: datetime, *, keep: Set[str] = frozenset()) -> list[str]:
        """Fail the running responses whose owner was last heard of before `before` (but those
        in `keep`: the caller's own, alive); the ids of their holds, for the caller to release."""
        holds: list[str] = []
        for row in self.store.stale(before):
            if row.id in keep:
                continue
            payload = json.loads(row.payload_json)
            payload.update(status="failed", error=OWNER_DIED)
            if self.store.set_status(row.id, "failed", json.dumps(payload)) and row.reservation_id:
                holds.append(row.reservation_id)
        return holds

    def purge_events(self, before: datetime) -> int:
        return self.store.purge_events(before)
