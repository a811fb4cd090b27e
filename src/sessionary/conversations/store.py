"""SQL for sessions, messages and stored responses.

Lists are scoped to their owner in SQL; a session or response is fetched by id and its owner
checked by the service (403 for another's). Messages are read through their session, once the
service has checked that session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, select

from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredResponse,
)
from sessionary.kit.pagination import PageParams
from sessionary.kit.sql import insert_rows
from sessionary.kit.store import Scope, Store, live, page, readable_by


class ConversationStore(Store):
    # Sessions

    def add_session(self, row: ConversationSession, *, flush: bool = True) -> ConversationSession:
        if not flush:
            self.db.add(row)
            return row
        return self.add(row)

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

    def add_messages(self, rows: Sequence[ConversationMessage]) -> None:
        insert_rows(self.db, rows)

    def messages(
        self, session_id: str, *, up_to_id: str | None = None
    ) -> list[ConversationMessage]:
        query = (
            select(ConversationMessage)
            .where(ConversationMessage.session_id == session_id)
            .order_by(ConversationMessage.id)
        )
        if up_to_id is not None:
            query = query.where(ConversationMessage.id <= up_to_id)
        return list(self.db.scalars(query))

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

    def last_message_of_response(self, response_id: str) -> ConversationMessage | None:
        return self.db.scalars(
            select(ConversationMessage)
            .where(ConversationMessage.response_id == response_id)
            .order_by(ConversationMessage.id.desc())
            .limit(1)
        ).first()

    # Responses

    def add_response(self, row: StoredResponse) -> None:
        insert_rows(self.db, [row])

    def get_response(self, response_id: str) -> StoredResponse | None:
        return self.by_id(StoredResponse, response_id)

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
