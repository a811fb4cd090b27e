"""Login and auth tokens (and ChatKit client secrets) remember what they descend from.

`api_key_id` is the API key at the root of the token's chain (the key that asked for the first
login token); `parent_token_id` the token that minted it (an auth token minting a login token,
a login token exchanged for an auth token). A token lives only while its root key and every auth
token above it live, so revoking a key or a token ends all its descendants. A ChatKit session
records the key or auth token that created it, so its client secret dies with them too.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("client_tokens") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("parent_token_id", sa.String(40), nullable=True))
        batch.create_index("ix_client_tokens_api_key_id", ["api_key_id"])
    with op.batch_alter_table("chatkit_sessions") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("token_id", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chatkit_sessions") as batch:
        batch.drop_column("token_id")
        batch.drop_column("api_key_id")
    with op.batch_alter_table("client_tokens") as batch:
        batch.drop_index("ix_client_tokens_api_key_id")
        batch.drop_column("parent_token_id")
        batch.drop_column("api_key_id")
