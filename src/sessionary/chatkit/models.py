"""Tables of the ChatKit domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow


class ChatKitSession(Base):
    """The client-secret side of a conversation session (same id)."""

    __tablename__ = "chatkit_sessions"

    id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversation_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    user: Mapped[str] = mapped_column(String(512))
    workflow_json: Mapped[str] = mapped_column(Text)
    configuration_json: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    temperature: Mapped[float | None] = mapped_column(Float)
    secret_prefix: Mapped[str] = mapped_column(String(40), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    max_requests_per_minute: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Who created it: the secret stops working when that key or auth token is revoked.
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    token_id: Mapped[str | None] = mapped_column(String(40))


class RateLimitHit(Base):
    """One accepted request in a sliding window (old hits are pruned as new ones arrive)."""

    __tablename__ = "rate_limit_hits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
