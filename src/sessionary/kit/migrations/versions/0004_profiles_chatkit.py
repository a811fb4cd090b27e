"""Assistant profiles, ChatKit sessions (client secrets), and the rate limiter's hits.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sessionary.kit.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assistant_profiles",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("description", sa.String(512), nullable=True),
        sa.Column("instructions", sa.Text, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("tools_json", sa.Text, nullable=False),
        sa.Column("temperature", sa.Float, nullable=True),
        sa.Column("top_p", sa.Float, nullable=True),
        sa.Column("metadata_json", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "chatkit_sessions",
        sa.Column(
            "id",
            sa.String(40),
            sa.ForeignKey("conversation_sessions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("user", sa.String(512), nullable=False),
        sa.Column("workflow_json", sa.Text, nullable=False),
        sa.Column("configuration_json", sa.Text, nullable=False),
        sa.Column("instructions", sa.Text, nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("temperature", sa.Float, nullable=True),
        sa.Column("secret_prefix", sa.String(40), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("max_requests_per_minute", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "rate_limit_hits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("bucket", sa.String(80), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_rate_limit_hits_bucket_at", "rate_limit_hits", ["bucket", "at"])


def downgrade() -> None:
    op.drop_table("rate_limit_hits")
    op.drop_table("chatkit_sessions")
    op.drop_table("assistant_profiles")
