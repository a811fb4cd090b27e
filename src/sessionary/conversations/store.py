"""SQL for sessions, messages and stored responses. Every read is scoped to an account."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredResponse,
)
from sessionary.kit.sql import insert_rows


class ConversationStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    # Sessions

    def add_session(self, row: ConversationSession) -> ConversationSession:
        self.session.add(row)
        self.session.flush()
        return row

    def get_session(self, session_id: str) -> ConversationSession | None:
        row = self.session.get(ConversationSession, session_id)
        return row if row is not None and row.deleted_at is None else None

    def sessions_of(
        self,
        account_id: str,
        kind: str,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
        session_ids: Sequence[str] | None = None,
    ) -> list[ConversationSession]:
        query = (
            select(ConversationSession)
            .where(ConversationSession.account_id == account_id)
            .where(ConversationSession.kind == kind)
            .where(ConversationSession.deleted_at.is_(None))
        )
        if session_ids is not None:
            query = query.where(ConversationSession.id.in_(list(session_ids)))
        return list(
            self.session.scalars(_page(query, ConversationSession.id, after, before, limit, order))
        )

    # Messages

    def add_messages(self, rows: Sequence[ConversationMessage]) -> None:
        insert_rows(self.session, rows)

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
        return list(self.session.scalars(query))

    def page_messages(
        self,
        session_id: str,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
        run_id: str | None = None,
    ) -> list[ConversationMessage]:
        """Up to limit + 1 messages (the extra one tells whether more follow)."""
        query = select(ConversationMessage).where(ConversationMessage.session_id == session_id)
        if run_id is not None:
            query = query.where(ConversationMessage.run_id == run_id)
        return list(
            self.session.scalars(_page(query, ConversationMessage.id, after, before, limit, order))
        )

    def page_sessions(
        self,
        account_id: str,
        external_user_id: str | None,
        *,
        after: str | None,
        before: str | None,
        limit: int,
        order: str,
    ) -> list[ConversationSession]:
        """Up to limit + 1 live sessions of one owner (the account's own, or one user's)."""
        query = (
            select(ConversationSession)
            .where(ConversationSession.account_id == account_id)
            .where(ConversationSession.deleted_at.is_(None))
            .where(
                ConversationSession.external_user_id.is_(None)
                if external_user_id is None
                else ConversationSession.external_user_id == external_user_id
            )
        )
        return list(
            self.session.scalars(_page(query, ConversationSession.id, after, before, limit, order))
        )

    def get_message(self, session_id: str, message_id: str) -> ConversationMessage | None:
        row = self.session.get(ConversationMessage, message_id)
        return row if row is not None and row.session_id == session_id else None

    def delete_message(self, message_id: str) -> None:
        self.session.execute(
            delete(ConversationMessage).where(ConversationMessage.id == message_id)
        )

    def messages_by_ids(self, session_id: str, ids: Sequence[str]) -> list[ConversationMessage]:
        if not ids:
            return []
        return list(
            self.session.scalars(
                select(ConversationMessage)
                .where(ConversationMessage.session_id == session_id)
                .where(ConversationMessage.id.in_(list(ids)))
                .order_by(ConversationMessage.id)
            )
        )

    def last_message_of_response(self, response_id: str) -> ConversationMessage | None:
        return self.session.scalars(
            select(ConversationMessage)
            .where(ConversationMessage.response_id == response_id)
            .order_by(ConversationMessage.id.desc())
            .limit(1)
        ).first()

    # Responses

    def add_response(self, row: StoredResponse) -> None:
        insert_rows(self.session, [row])

    def get_response(self, response_id: str) -> StoredResponse | None:
        return self.session.get(StoredResponse, response_id)

    def delete_response(self, response_id: str) -> None:
        self.session.execute(delete(StoredResponse).where(StoredResponse.id == response_id))

    def latest_image_response(self, session_id: str) -> StoredResponse | None:
        return self.session.scalars(
            select(StoredResponse)
            .where(StoredResponse.session_id == session_id)
            .where(StoredResponse.has_image.is_(True))
            .order_by(StoredResponse.id.desc())
            .limit(1)
        ).first()


def _page(
    query: Select[Any],
    column: InstrumentedAttribute[str],
    after: str | None,
    before: str | None,
    limit: int,
    order: str,
) -> Select[Any]:
    """Cursor pagination on a sortable id: `after` / `before` bound the window in list order."""
    if order == "asc":
        if after is not None:
            query = query.where(column > after)
        if before is not None:
            query = query.where(column < before)
        return query.order_by(column.asc()).limit(limit + 1)
    if after is not None:
        query = query.where(column < after)
    if before is not None:
        query = query.where(column > before)
    return query.order_by(column.desc()).limit(limit + 1)
