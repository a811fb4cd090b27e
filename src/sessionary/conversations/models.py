"""Tables of the conversations domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow


class ConversationSession(Base):
    __tablename__ = "conversation_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    external_user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(200))
    metadata_json: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="active")
    last_response_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ConversationMessage(Base):
    __tablename__ = "conversation_messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversation_sessions.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(20))
    # The message's parts in the Responses shape ({"type": "input_text", ...}), as JSON.
    content_json: Mapped[str] = mapped_column(Text)
    # What a text-only model reads of it.
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="completed")
    response_id: Mapped[str | None] = mapped_column(String(40))
    assistant_id: Mapped[str | None] = mapped_column(String(40))
    run_id: Mapped[str | None] = mapped_column(String(40))
    metadata_json: Mapped[str | None] = mapped_column(Text)
    attachments_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class StoredResponse(Base):
    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversation_sessions.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    external_user_id: Mapped[str | None] = mapped_column(String(40))
    previous_response_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    # The whole Responses payload as answered, so a GET returns exactly the same object.
    payload_json: Mapped[str] = mapped_column(Text)
    input_message_ids: Mapped[str] = mapped_column(Text)
    has_image: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # A background response is stored when queued and run by one process (`owner_process`,
    # alive while `heartbeat_at` is fresh); any process may ask it to stop (`cancel_requested`).
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_process: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    reservation_id: Mapped[str | None] = mapped_column(String(40))


class ResponseEvent(Base):
    """One streamed event of a background response, kept so any process can replay it."""

    __tablename__ = "response_events"

    response_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sequence_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(80))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class StoredCompletion(Base):
    """A chat completion made with `store: true`: its conversation is a session of its own."""

    __tablename__ = "stored_completions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversation_sessions.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    external_user_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    metadata_json: Mapped[str | None] = mapped_column(Text)
    # The chat.completion object as answered, so a GET returns the same object.
    payload_json: Mapped[str] = mapped_column(Text)
    input_message_ids: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class StoredCompletionTag(Base):
    """One metadata pair of a stored completion, so a list filters on it in SQL."""

    __tablename__ = "stored_completion_tags"
    __table_args__ = (Index("ix_stored_completion_tags_pair", "key", "value"),)

    completion_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("stored_completions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))
