"""SQL for sessions, messages and stored responses. Every read is scoped to an account."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredResponse,
)


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

    # Messages

    def add_messages(self, rows: Sequence[ConversationMessage]) -> None:
        self.session.add_all(rows)
        self.session.flush()

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
        self.session.add(row)
        self.session.flush()

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
