"""Stored chat completions: the completion made with `store: true`, and its metadata pairs.

Self-contained on purpose (its own column types): it must run the same whatever the code becomes.

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# What the models' UtcDateTime creates: a timezone-aware timestamp (a plain one on SQLite).
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stored_completions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(40),
            sa.ForeignKey("conversation_sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("external_user_id", sa.String(40), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=True),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("input_message_ids", sa.Text, nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
    )
    op.create_table(
        "stored_completion_tags",
        sa.Column(
            "completion_id",
            sa.String(40),
            sa.ForeignKey("stored_completions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(512), nullable=False),
    )
    op.create_index("ix_stored_completion_tags_pair", "stored_completion_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_table("stored_completion_tags")
    op.drop_table("stored_completions")
