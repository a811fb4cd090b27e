"""SQL for sessions, messages, stored responses and stored chat completions.

Lists are scoped to their owner in SQL; a session or response is fetched by id and its owner
checked by the service (403 for another's). A stored completion is fetched within its owner's
reach in SQL, as OpenAI answers another's with 404. Messages are read through their session,
once the service has checked that session.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Select, Table, bindparam, delete, func, inspect, select, update

from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredCompletion,
    StoredCompletionTag,
    StoredResponse,
)
from sessionary.kit.loop_read import loop_reader_of
from sessionary.kit.pagination import PageParams
from sessionary.kit.raw_sql import at_once_guard, run
from sessionary.kit.sql import insert_rows, insert_values
from sessionary.kit.store import Scope, Store, live, page, readable_by

_SESSIONS = cast(Table, ConversationSession.__table__)
# A live session moved on to its latest response; RETURNING tells a gone one from a moved one.
# A turn's end at once on PostgreSQL (`kit/at_once.py`) sends it ahead of the turn's messages,
# which go in only where it matched: a session deleted during the turn refuses them all.
_ADVANCE = at_once_guard(
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("p_id"), _SESSIONS.c.deleted_at.is_(None))
    .values(last_response_id=bindparam("p_last"), updated_at=bindparam("p_now"))
    .returning(_SESSIONS.c.id),
    returns_param="p_id",
    gates="session_id",
)
_MESSAGES = cast(Table, ConversationMessage.__table__)
_RESPONSES = cast(Table, StoredResponse.__table__)
# What a turn reads of its session and its history: a few columns as plain rows, on the
# connection's cursor (`kit/raw_sql.py`), not ORM objects it never changes.
_SESSION_REF = select(
    _SESSIONS.c.id,
    _SESSIONS.c.account_id,
    _SESSIONS.c.external_user_id,
    _SESSIONS.c.kind,
    _SESSIONS.c.last_response_id,
).where(_SESSIONS.c.id == bindparam("p_id"), _SESSIONS.c.deleted_at.is_(None))
_TRANSCRIPT = (
    select(_MESSAGES.c.id, _MESSAGES.c.role, _MESSAGES.c.content_json, _MESSAGES.c.text)
    .where(_MESSAGES.c.session_id == bindparam("p_session"))
    .order_by(_MESSAGES.c.id)
)
# A branch's history (`previous_response_id`): the session's messages up to the last of one
# response, found through the session's index. Messages have no index on `response_id`: looked
# up by it alone, the last one was a scan back through every message stored since, everyone's.
_LAST_OF_RESPONSE = (
    select(func.max(_MESSAGES.c.id))
    .where(
        _MESSAGES.c.session_id == bindparam("p_session"),
        _MESSAGES.c.response_id == bindparam("p_response"),
    )
    .scalar_subquery()
)
_TRANSCRIPT_THROUGH = _TRANSCRIPT.where(_MESSAGES.c.id <= _LAST_OF_RESPONSE)
_TRANSCRIPT_HEAD = _TRANSCRIPT.limit(bindparam("p_limit"))
_TRANSCRIPT_THROUGH_HEAD = _TRANSCRIPT_THROUGH.limit(bindparam("p_limit"))
# A turn on a session known by id reads it and its history in one statement (on PostgreSQL
# one round trip instead of two): the session's columns on every row, a message's on each.
_SESSION_AND_TRANSCRIPT = (
    select(
        *_SESSION_REF.selected_columns,
        _MESSAGES.c.id.label("message_id"),
        _MESSAGES.c.role,
        _MESSAGES.c.content_json,
        _MESSAGES.c.text,
    )
    .select_from(_SESSIONS.outerjoin(_MESSAGES, _MESSAGES.c.session_id == _SESSIONS.c.id))
    .where(_SESSIONS.c.id == bindparam("p_id"), _SESSIONS.c.deleted_at.is_(None))
    .order_by(_MESSAGES.c.id)
)
_SESSION_AND_TRANSCRIPT_HEAD = _SESSION_AND_TRANSCRIPT.limit(bindparam("p_limit"))
_SessionRow = namedtuple("_SessionRow", "id account_id external_user_id kind last_response_id")
_MessageRow = namedtuple("_MessageRow", "id role content_json text")
# What a turn needs of the response it continues from: never its payload, which can be large.
_RESPONSE_REF = select(
    _RESPONSES.c.id,
    _RESPONSES.c.session_id,
    _RESPONSES.c.account_id,
    _RESPONSES.c.external_user_id,
    _RESPONSES.c.status,
).where(_RESPONSES.c.id == bindparam("p_id"))


class SessionRef(Protocol):
    """A session as a turn reads it (a ConversationSession row is one too)."""

    @property
    def id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def external_user_id(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def last_response_id(self) -> str | None: ...


class ResponseRef(Protocol):
    """A stored response as a turn that continues from it reads it (a StoredResponse is one)."""

    @property
    def id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def external_user_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...


class TranscriptRow(Protocol):
    """A stored message as a turn's history reads it (a ConversationMessage row is one too)."""

    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def content_json(self) -> str: ...
    @property
    def text(self) -> str: ...


class ConversationStore(Store):
    # Sessions

    def session_ref(self, session_id: str) -> SessionRef | None:
        """The live session's id, owner, kind and latest response (None: deleted or gone)."""
        found = self._read(_SESSION_REF, {"p_id": session_id})
        return cast(SessionRef, found[0]) if found else None

    def session_and_transcript(
        self, session_id: str, *, limit: int | None = None
    ) -> tuple[SessionRef | None, list[TranscriptRow]]:
        """`session_ref` and the session's whole `transcript` (its first `limit` messages when
        given), in one statement."""
        params: dict[str, Any] = {"p_id": session_id}
        statement = _SESSION_AND_TRANSCRIPT
        if limit is not None:
            params["p_limit"] = limit
            statement = _SESSION_AND_TRANSCRIPT_HEAD
        rows = self._read(statement, params)
        if not rows:
            return None, []
        split = len(_SessionRow._fields)  # the session's columns, then a message's
        messages: list[TranscriptRow] = [
            _MessageRow(*row[split:]) for row in rows if row.message_id is not None
        ]
        return _SessionRow(*rows[0][:split]), messages

    def advance_session(self, session_id: str, last_response_id: str, now: datetime) -> bool:
        """Point a live session at its latest response; False when it is deleted or gone."""
        found = run(
            self.db.connection(),
            _ADVANCE,
            {"p_id": session_id, "p_last": last_response_id, "p_now": now},
        )
        return found.first() is not None

    def add_session(self, row: ConversationSession, *, now: bool = True) -> ConversationSession:
        """Insert the session now, or (`now=False`) leave it transient for `add_messages` to
        insert with the first messages (a turn on a new session)."""
        return self.add(row) if now else row

    def get_session(self, session_id: str) -> ConversationSession | None:
        return self.by_id(ConversationSession, session_id)

    def sessions_of(
        self,
        account_id: str,
        kind: str,
        params: PageParams,
        *,
        among: Select[Any] | None = None,
    ) -> tuple[list[ConversationSession], bool]:
        """A page of the live sessions of one face, of the account and all its users, optionally
        among the ids a subquery selects (one statement: the list is never loaded whole)."""
        query = live(select(ConversationSession), ConversationSession).where(
            ConversationSession.account_id == account_id, ConversationSession.kind == kind
        )
        if among is not None:
            query = query.where(ConversationSession.id.in_(among))
        return page(self.db, query, ConversationSession.id, params)

    # Messages

    def add_messages(
        self, conversation: ConversationSession, rows: Sequence[ConversationMessage]
    ) -> None:
        """Insert messages, after their session when it is not stored yet (one Core insert
        each, instead of the unit of work's flush of the session)."""
        insert_rows(self.db, [conversation, *rows] if inspect(conversation).transient else rows)

    def add_message_values(
        self, conversation: ConversationSession | None, values: Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert messages given as column values, after their session when it is a new one
        not stored yet (`conversation`; None: the session is stored)."""
        if conversation is not None and inspect(conversation).transient:
            insert_rows(self.db, [conversation])
        insert_values(self.db, _MESSAGES, values)

    def transcript(
        self, session_id: str, *, through_response: str | None = None, limit: int | None = None
    ) -> list[TranscriptRow]:
        """A session's messages in order (up to and including the last of `through_response`;
        none when it has none in this session), as history; only the first `limit` of them
        when given."""
        params: dict[str, Any] = {"p_session": session_id}
        if through_response is not None:
            params["p_response"] = through_response
        if limit is not None:
            params["p_limit"] = limit
        statement = {
            (False, False): _TRANSCRIPT,
            (True, False): _TRANSCRIPT_THROUGH,
            (False, True): _TRANSCRIPT_HEAD,
            (True, True): _TRANSCRIPT_THROUGH_HEAD,
        }[(through_response is not None, limit is not None)]
        return self._read(statement, params)

    def _read(self, statement: Select[Any], params: dict[str, Any]) -> list[Any]:
        """The rows of one of a turn's plain reads. On SQLite, in a unit on the event loop, the
        loop's own reader answers (`kit/loop_read.py`), with no connection checked out of the
        pool for the session: a plan reading 80 messages took 171 µs of CPU against 228
        (in-process, 8 rounds of 500). Such a unit reads a history with a limit
        (`conversations/service.py`), so the rows are few. Elsewhere, or when the reader cannot,
        the session's connection."""
        reads = loop_reader_of(self.db)
        read, rows = reads.rows(statement, params) if reads else (False, [])
        return rows if read else run(self.db.connection(), statement, params).rows

    def page_messages(
        self, session_id: str, params: PageParams, *, run_id: str | None = None
    ) -> tuple[list[ConversationMessage], bool]:
        """A page of a session's messages, and whether more follow it."""
        query = select(ConversationMessage).where(ConversationMessage.session_id == session_id)
        if run_id is not None:
            query = query.where(ConversationMessage.run_id == run_id)
        return page(self.db, query, ConversationMessage.id, params)

    def page_sessions(
        self, scope: Scope, params: PageParams
    ) -> tuple[list[ConversationSession], bool]:
        """A page of the live sessions of one owner (the account's own, or one user's)."""
        query = readable_by(select(ConversationSession), ConversationSession, scope)
        return page(self.db, query, ConversationSession.id, params)

    def get_message(self, session_id: str, message_id: str) -> ConversationMessage | None:
        row = self.db.get(ConversationMessage, message_id)
        return row if row is not None and row.session_id == session_id else None

    def delete_message(self, message_id: str) -> None:
        self.db.execute(delete(ConversationMessage).where(ConversationMessage.id == message_id))

    def page_messages_among(
        self, session_id: str, ids: Sequence[str], params: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        query = (
            select(ConversationMessage)
            .where(ConversationMessage.session_id == session_id)
            .where(ConversationMessage.id.in_(list(ids)))
        )
        return page(self.db, query, ConversationMessage.id, params)

    # Responses

    def add_response(self, values: Mapping[str, Any]) -> None:
        insert_values(self.db, _RESPONSES, [values])

    def get_response(self, response_id: str) -> StoredResponse | None:
        return self.by_id(StoredResponse, response_id)

    def response_ref(self, response_id: str) -> ResponseRef | None:
        """A stored response's id, session, owner and status, in one plain row."""
        found = self._read(_RESPONSE_REF, {"p_id": response_id})
        return cast(ResponseRef, found[0]) if found else None

    def delete_response(self, response_id: str) -> None:
        self.db.execute(delete(StoredResponse).where(StoredResponse.id == response_id))

    def latest_image_response(self, session_id: str) -> StoredResponse | None:
        return self.db.scalars(
            select(StoredResponse)
            .where(StoredResponse.session_id == session_id)
            .where(StoredResponse.has_image.is_(True))
            .order_by(StoredResponse.id.desc())
            .limit(1)
        ).first()

    # Chat completions

    def add_completion(self, row: StoredCompletion) -> None:
        insert_rows(self.db, [row])

    @staticmethod
    def _completions_of(scope: Scope) -> Select[Any]:
        """The completions an owner reaches whose session still lives: an account reaches its
        users' too, an external user only its own."""
        query = (
            select(StoredCompletion)
            .join(ConversationSession, ConversationSession.id == StoredCompletion.session_id)
            .where(ConversationSession.deleted_at.is_(None))
            .where(StoredCompletion.account_id == scope.account_id)
        )
        if scope.external_user_id is not None:
            query = query.where(StoredCompletion.external_user_id == scope.external_user_id)
        return query

    def reachable_completion(self, scope: Scope, completion_id: str) -> StoredCompletion | None:
        query = self._completions_of(scope).where(StoredCompletion.id == completion_id)
        return self.db.scalars(query).first()

    def page_completions(
        self, scope: Scope, params: PageParams, *, model: str | None, metadata: dict[str, str]
    ) -> tuple[list[StoredCompletion], bool]:
        """A page of one owner's own completions (not its users'), filtered in SQL."""
        query = self._completions_of(scope)
        if scope.external_user_id is None:
            query = query.where(StoredCompletion.external_user_id.is_(None))
        if model is not None:
            query = query.where(StoredCompletion.model == model)
        for key, value in metadata.items():
            tagged = select(StoredCompletionTag.completion_id).where(
                StoredCompletionTag.key == key, StoredCompletionTag.value == value
            )
            query = query.where(StoredCompletion.id.in_(tagged))
        return page(self.db, query, StoredCompletion.id, params)

    def set_completion_tags(self, completion_id: str, metadata: dict[str, str]) -> None:
        self.db.execute(
            delete(StoredCompletionTag).where(StoredCompletionTag.completion_id == completion_id)
        )
        insert_rows(
            self.db,
            [
                StoredCompletionTag(completion_id=completion_id, key=k, value=v)
                for k, v in metadata.items()
            ],
        )

    def delete_completion(self, completion_id: str) -> None:
        self.db.execute(
            delete(StoredCompletionTag).where(StoredCompletionTag.completion_id == completion_id)
        )
        self.db.execute(delete(StoredCompletion).where(StoredCompletion.id == completion_id))
