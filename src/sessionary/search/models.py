"""Tables of the search domain: templates and their documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from sessionary.kit.models import Base, UtcDateTime, utcnow
from sessionary.search.vectors import VectorColumn

JsonColumn = JSON().with_variant(JSONB(), "postgresql")


class EmbeddingTemplate(Base):
    __tablename__ = "embedding_templates"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), index=True)
    external_user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    name: Mapped[str | None] = mapped_column(String(256))
    field_options: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    schema: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    embedding_model: Mapped[str] = mapped_column(String(200))
    dimension: Mapped[int] = mapped_column(Integer)
    template_hash: Mapped[str] = mapped_column(String(64))
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    @property
    def status(self) -> str:
        return "ready" if self.record_count else "empty"


class SearchDocument(Base):
    __tablename__ = "search_documents"
    __table_args__ = (UniqueConstraint("template_id", "source_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    template_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("embedding_templates.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[str] = mapped_column(String(256))
    # What the caller may get back (retrievable fields only).
    record: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    # Filterable values as given, and folded for matching (lower case, accents removed).
    filters: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    folded: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[np.ndarray] = mapped_column(VectorColumn())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
