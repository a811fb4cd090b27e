"""Tables of the console: one-time sign-in links and browser sessions, both stored as hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow


class ConsoleLink(Base):
    """A link printed by `sessionary console-link`: single use, minutes long."""

    __tablename__ = "console_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(String(40))
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ConsoleSession(Base):
    """A signed-in browser. It lives while its key lives (a link session has no key)."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The account the console shows; an operator session may switch it.
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
