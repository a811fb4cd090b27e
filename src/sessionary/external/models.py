"""Tables of the external-users domain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow


class ExternalUser(Base):
    """One end user of a platform (an account), known by the platform's own identifiers.

    `id` (eu_...) is ours; `external_user_id` and `unique_key` are the platform's. The pair
    (provider, unique_key) is unique per account; `unique_key` defaults to `external_user_id`.
    """

    __tablename__ = "external_users"
    __table_args__ = (
        UniqueConstraint("account_id", "provider", "unique_key", name="uq_external_users_identity"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(100))
    unique_key: Mapped[str] = mapped_column(String(256))
    external_user_id: Mapped[str] = mapped_column(String(256))
    external_app_id: Mapped[str | None] = mapped_column(String(256))
    external_company_id: Mapped[str | None] = mapped_column(String(256))
    external_account_id: Mapped[str | None] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    username: Mapped[str | None] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(200))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    user_type: Mapped[str | None] = mapped_column(String(100))
    browser_installation_json: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LibraryMark(Base):
    """Archive / publish state of one billed request (a ledger charge) in a user's library."""

    __tablename__ = "external_library_marks"

    entry_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40))
    external_user_id: Mapped[str] = mapped_column(String(40), index=True)
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    title: Mapped[str | None] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    tags_json: Mapped[str | None] = mapped_column(Text)
    publication_id: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
