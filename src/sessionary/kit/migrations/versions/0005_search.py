"""Embedding templates and their search documents (vectors: pgvector or float32 bytes).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

from sessionary.kit.models import UtcDateTime

# The column types as they were when this revision was written, not the live models' (which may
# change): JSONB and pgvector on PostgreSQL; JSON text and float32 bytes on SQLite.
JsonColumn = sa.JSON().with_variant(JSONB(), "postgresql")
VectorColumn = sa.LargeBinary().with_variant(Vector(), "postgresql")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embedding_templates",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("external_user_id", sa.String(40), nullable=True, index=True),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("field_options", JsonColumn, nullable=False),
        sa.Column("schema", JsonColumn, nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("template_hash", sa.String(64), nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "search_documents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "template_id",
            sa.String(40),
            sa.ForeignKey("embedding_templates.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("source_id", sa.String(256), nullable=False),
        sa.Column("record", JsonColumn, nullable=False),
        sa.Column("filters", JsonColumn, nullable=False),
        sa.Column("folded", JsonColumn, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", VectorColumn, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("template_id", "source_id"),
    )


def downgrade() -> None:
    op.drop_table("search_documents")
    op.drop_table("embedding_templates")
