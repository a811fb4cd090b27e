"""Background responses: who runs a stored response, its heartbeat and cancel flag; its events.

A background response is stored when queued; the process that runs it writes `owner_process`
and refreshes `heartbeat_at`; any process sets `cancel_requested`. Streamed events are kept in
`response_events` for a bounded time so a stream can be resumed from any process. Column types
are spelled here, not imported from the models, so the migration runs the same later.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sessionary.kit.models import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stored_responses") as batch:
        batch.add_column(
            sa.Column("background", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("owner_process", sa.String(120), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime(), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("reservation_id", sa.String(40), nullable=True))
    op.create_index(
        "ix_stored_responses_running",
        "stored_responses",
        ["status"],
        postgresql_where=sa.text("status IN ('queued', 'in_progress')"),
        sqlite_where=sa.text("status IN ('queued', 'in_progress')"),
    )
    op.create_table(
        "response_events",
        sa.Column("response_id", sa.String(40), primary_key=True),
        sa.Column("sequence_number", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_response_events_created_at", "response_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_response_events_created_at", table_name="response_events")
    op.drop_table("response_events")
    op.drop_index("ix_stored_responses_running", table_name="stored_responses")
    with op.batch_alter_table("stored_responses") as batch:
        for column in (
            "reservation_id",
            "cancel_requested",
            "heartbeat_at",
            "owner_process",
            "background",
        ):
            batch.drop_column(column)
