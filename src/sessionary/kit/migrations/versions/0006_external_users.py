"""External users, their keys, login and auth tokens, and the request library.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sessionary.kit.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "external_users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("unique_key", sa.String(256), nullable=False),
        sa.Column("external_user_id", sa.String(256), nullable=False),
        sa.Column("external_app_id", sa.String(256), nullable=True),
        sa.Column("external_company_id", sa.String(256), nullable=True),
        sa.Column("external_account_id", sa.String(256), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("username", sa.String(200), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("avatar_url", sa.String(2048), nullable=True),
        sa.Column("user_type", sa.String(100), nullable=True),
        sa.Column("browser_installation_json", sa.Text, nullable=True),
        sa.Column("metadata_json", sa.Text, nullable=True),
        sa.Column("system_prompt", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint(
            "account_id", "provider", "unique_key", name="uq_external_users_identity"
        ),
    )
    op.create_table(
        "client_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("external_user_id", sa.String(40), nullable=True, index=True),
        sa.Column("redirect", sa.String(2048), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "external_library_marks",
        sa.Column("entry_id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("external_user_id", sa.String(40), nullable=False, index=True),
        sa.Column("archived_at", UtcDateTime(), nullable=True),
        sa.Column("published_at", UtcDateTime(), nullable=True),
        sa.Column("title", sa.String(300), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("tags_json", sa.Text, nullable=True),
        sa.Column("publication_id", sa.String(40), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    # Plain ALTER TABLE (no batch copy on SQLite): the ledger's append-only triggers stay.
    op.add_column("api_keys", sa.Column("external_user_id", sa.String(40), nullable=True))
    op.create_index("ix_api_keys_external_user_id", "api_keys", ["external_user_id"])
    op.add_column("credit_ledger", sa.Column("subject_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("credit_ledger", "subject_id")
    op.drop_index("ix_api_keys_external_user_id", "api_keys")
    op.drop_column("api_keys", "external_user_id")
    op.drop_table("external_library_marks")
    op.drop_table("client_tokens")
    op.drop_table("external_users")
