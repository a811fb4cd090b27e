"""Tables of the accounts domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    assistant_model: Mapped[str | None] = mapped_column(String(200))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set for an external user's own key (type sk_eu_): it speaks for that user only.
    external_user_id: Mapped[str | None] = mapped_column(String(40), index=True)


class ClientToken(Base):
    """A login token (single use, minutes) or the auth token it was exchanged for (revocable).

    Stored like keys: a lookup prefix and the SHA-256 of the whole token, never the token.
    """

    __tablename__ = "client_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # "login" | "auth"
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    external_user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    redirect: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Lineage: the API key at the root of the chain, and the token that minted this one.
    api_key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    parent_token_id: Mapped[str | None] = mapped_column(String(40))
