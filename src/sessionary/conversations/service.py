"""Rules for sessions: who may use one, what history a turn sees, and how a turn is recorded."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredResponse,
)
from sessionary.conversations.store import (
    ConversationStore,
    ResponseRef,
    SessionRef,
    TranscriptRow,
)
from sessionary.kit.errors import Forbidden, InvalidRequest, NotFound
from sessionary.kit.ids import ID_PATTERN, new_id
from sessionary.kit.json_answer import json_text
from sessionary.kit.loop_units import leave_the_loop, running_here
from sessionary.kit.metadata import dump
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

_ID_SHAPE = re.compile(ID_PATTERN)
# A turn planned on the event loop reads at most this much history there (`history`).
LOOP_HISTORY_ROWS = 100
LOOP_HISTORY_CHARS = 64_000
_Session = TypeVar("_Session", bound=SessionRef)
_Response = TypeVar("_Response", bound=ResponseRef)


@dataclass(frozen=True)
class NewMessage:
    """A message about to be stored: its parts in the Responses shape, and its plain text."""

    role: str
    parts: list[dict[str, Any]]
    text: str


def check_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _ID_SHAPE.match(value):
        raise InvalidRequest(f"'{param}' must be a non-empty id string.", param=param)
    return value


class ConversationService:
    def __init__(self, db: Session) -> None:
        self.store = ConversationStore(db)

    def create_session(
        self,
        caller: Principal,
        *,
        kind: str,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        session_id: str | None = None,
        deferred: bool = False,
    ) -> ConversationSession:
        """A new session of the caller's. `deferred`: inserted with its first messages (`append`)
        rather than now, so a session created and written to in one turn (a first Responses
        call) is inserted once with its final state instead of inserted and then updated."""
        now = utcnow()
        return self.store.add_session(
            ConversationSession(
                id=session_id or new_id("sess"),
                account_id=caller.account_id,
                external_user_id=caller.external_user_id,
                kind=kind,
                name=name,
                metadata_json=dump(metadata),
                status="active",
                created_at=now,
                updated_at=now,
            ),
            now=not deferred,
        )

    def visible_session(
        self, caller: Principal, session_id: str, param: str, what: str
    ) -> ConversationSession:
        """As `owned_session`, but another owner's session is as absent as a missing one (404),
        as OpenAI answers for objects of another organisation."""
        try:
            return self.owned_session(caller, session_id, param)
        except (Forbidden, NotFound):
            raise NotFound(f"No {what} '{session_id}'.", param=param) from None

    def owned_session(self, caller: Principal, session_id: str, param: str) -> ConversationSession:
        row = self.store.get_session(check_id(session_id, param))
        return _reachable(caller, row, session_id, param)

    def turn_session(self, caller: Principal, session_id: str, param: str) -> SessionRef:
        """`owned_session` as a turn reads it: its id, owner, kind and latest response, in one
        plain row instead of an ORM object the turn never changes."""
        row = self.store.session_ref(check_id(session_id, param))
        return _reachable(caller, row, session_id, param)

    def turn_session_and_history(
        self, caller: Principal, session_id: str, param: str
    ) -> tuple[SessionRef, list[TranscriptRow]]:
        """`turn_session` and its whole `history`, read together."""
        row, history = self.store.session_and_transcript(
            check_id(session_id, param), limit=_history_limit()
        )
        conversation = _reachable(caller, row, session_id, param)
        return conversation, _for_the_loop(history)

    def session_of(self, response: ResponseRef) -> SessionRef | None:
        """The live conversation a response (already checked for ownership) belongs to."""
        return self.store.session_ref(response.session_id)

    def list_sessions(
        self, caller: Principal, page: PageParams
    ) -> tuple[list[ConversationSession], bool]:
        """The caller's own sessions (the account's, or one external user's), every kind."""
        return self.store.page_sessions(caller, page)

    def sessions_of_kind(
        self, caller: Principal, kind: str, *, among: Select[Any], page: PageParams
    ) -> tuple[list[ConversationSession], bool]:
        """The account's live sessions of one face among the ids a subquery selects (ChatKit
        threads of one user)."""
        return self.store.sessions_of(caller.account_id, kind, page, among=among)

    def page_messages(
        self, conversation: ConversationSession, page: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        return self.store.page_messages(conversation.id, page)

    def soft_delete(self, conversation: ConversationSession) -> None:
        """Hidden from every face at once (thread, ChatKit thread, conversation)."""
        self.store.soft_delete(conversation)

    def owned_response(self, caller: Principal, response_id: str) -> StoredResponse:
        row = self.store.get_response(check_id(response_id, "response_id"))
        return _owned_response(caller, row, response_id, "response_id")

    def continued_response(self, caller: Principal, response_id: str) -> ResponseRef:
        """`owned_response` as a turn continuing from it reads it (`previous_response_id`): its
        session, owner and status in one plain row, without its payload."""
        row = self.store.response_ref(check_id(response_id, "previous_response_id"))
        return _owned_response(caller, row, response_id, "previous_response_id")

    def history(
        self, conversation: SessionRef, *, through_response: str | None = None
    ) -> list[TranscriptRow]:
        """The session's messages, or only those up to a given response (a branch point).

        In a turn planned on the event loop (`kit/loop_units.py`) a history longer than
        `LOOP_HISTORY_ROWS` messages or `LOOP_HISTORY_CHARS` characters sends the plan to a
        worker: it is read with one row more than that, so a short one costs nothing extra."""
        rows = self.store.transcript(
            conversation.id, through_response=through_response, limit=_history_limit()
        )
        return _for_the_loop(rows)

    def append(
        self,
        conversation: ConversationSession,
        messages: Sequence[NewMessage],
        *,
        response_id: str | None = None,
    ) -> list[ConversationMessage]:
        """Store messages at the end of the session, in order (their ids sort as given)."""
        now = utcnow()
        rows = _message_rows(conversation.id, messages, response_id, now)
        conversation.updated_at = now  # before the insert, which may insert a deferred session
        self.store.add_messages(conversation, rows)
        return rows

    def record_turn(
        self,
        conversation: ConversationSession,
        response_id: str,
        inputs: Sequence[NewMessage],
        outputs: Sequence[NewMessage],
    ) -> list[str]:
        """Append the turn's messages; returns the ids of its inputs (for input_items)."""
        now = utcnow()
        conversation.last_response_id = response_id  # before a new session is inserted
        conversation.updated_at = now
        values = _message_values(conversation.id, [*inputs, *outputs], response_id, now)
        self.store.add_message_values(conversation, values)
        return [value["id"] for value in values[: len(inputs)]]

    def record_turn_in(
        self,
        session_id: str,
        response_id: str,
        inputs: Sequence[NewMessage],
        outputs: Sequence[NewMessage],
    ) -> list[str]:
        """`record_turn` on a stored session known by id (a turn's, checked when it was
        planned): one guarded UPDATE moves it on, or finds it deleted meanwhile (NotFound),
        where loading it again and flushing it took two statements and the ORM's bookkeeping."""
        now = utcnow()
        if not self.store.advance_session(session_id, response_id, now):
            raise NotFound(f"No session '{session_id}'.", param="session_id")
        values = _message_values(session_id, [*inputs, *outputs], response_id, now)
        self.store.add_message_values(None, values)
        return [value["id"] for value in values[: len(inputs)]]

    def store_response(self, values: Mapping[str, Any]) -> None:
        """A stored response, given as its column values."""
        self.store.add_response(values)

    def delete_response(self, caller: Principal, response_id: str) -> None:
        self.owned_response(caller, response_id)
        self.store.delete_response(response_id)

    def latest_image(self, conversation: SessionRef) -> str | None:
        row = self.store.latest_image_response(conversation.id)
        if row is None:
            return None
        for item in reversed(json.loads(row.payload_json).get("output", [])):
            if item.get("type") == "image_generation_call" and item.get("result"):
                return str(item["result"])
        return None

    def input_messages(
        self, response: StoredResponse, page: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        """A page of a response's input items (still in its session: a deleted one is gone)."""
        ids = json.loads(response.input_message_ids)
        return self.store.page_messages_among(response.session_id, ids, page)


def _message_rows(
    session_id: str, messages: Sequence[NewMessage], response_id: str | None, now: datetime
) -> list[ConversationMessage]:
    return [
        ConversationMessage(**values)
        for values in _message_values(session_id, messages, response_id, now)
    ]


def _message_values(
    session_id: str, messages: Sequence[NewMessage], response_id: str | None, now: datetime
) -> list[dict[str, Any]]:
    """New messages' column values: a turn's are inserted as such (never changed afterwards,
    they need no ORM object: building one cost about 25 µs)."""
    return [
        {
            "id": new_id("msg"),
            "session_id": session_id,
            "role": message.role,
            "content_json": json_text(message.parts),
            "text": message.text,
            "status": "completed",
            "response_id": response_id,
            "created_at": now,
        }
        for message in messages
    ]


def _reachable(caller: Principal, row: _Session | None, session_id: str, param: str) -> _Session:
    """The session when the caller may use it: 404 when it is gone, 403 when it is another's or
    outside a client secret's own session."""
    if row is None:
        raise NotFound(f"No session '{session_id}'.", param=param)
    caller.check_reach(row.account_id, row.external_user_id, "session", param)
    if caller.session_scope is not None and caller.session_scope != row.id:
        raise Forbidden(
            "This client secret is valid for its own session only.",
            param=param,
            code="session_forbidden",
        )
    return row


def _owned_response(
    caller: Principal, row: _Response | None, response_id: str, param: str
) -> _Response:
    """The stored response when the caller may read it: 404 when it is gone, 403 when it is
    another's or outside a client secret's own session."""
    if row is None:
        raise NotFound(f"No response '{response_id}'.", param=param)
    caller.check_reach(row.account_id, row.external_user_id, "response", param)
    if caller.session_scope is not None and caller.session_scope != row.session_id:
        raise Forbidden("This client secret is valid for its own session only.", param=param)
    return row


def _history_limit() -> int | None:
    """How many messages a turn's plan reads: all of them on a worker; on the event loop one
    more than `LOOP_HISTORY_ROWS`, enough for `_for_the_loop` to tell a long history."""
    return LOOP_HISTORY_ROWS + 1 if running_here() else None


def _for_the_loop(rows: list[TranscriptRow]) -> list[TranscriptRow]:
    """A history read on the event loop with one row more than `LOOP_HISTORY_ROWS`: sent to a
    worker (`leave_the_loop`) when it is longer than that, or than `LOOP_HISTORY_CHARS`."""
    if running_here() and (
        len(rows) > LOOP_HISTORY_ROWS
        or sum(len(row.content_json) + len(row.text) for row in rows) > LOOP_HISTORY_CHARS
    ):
        leave_the_loop("a long history")
    return rows
