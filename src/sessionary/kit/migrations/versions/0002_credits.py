"""Credits: balances (never negative), the append-only ledger, reservations, idempotency records.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sessionary.kit.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_APPEND_ONLY = """
CREATE TRIGGER credit_ledger_no_{verb} BEFORE {verb_upper} ON credit_ledger
BEGIN SELECT RAISE(ABORT, 'credit_ledger is append-only'); END
"""

_PG_APPEND_ONLY = [
    """
    CREATE FUNCTION credit_ledger_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'credit_ledger is append-only'; END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER credit_ledger_append_only BEFORE UPDATE OR DELETE ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION credit_ledger_append_only()
    """,
]


def upgrade() -> None:
    op.create_table(
        "credit_balances",
        sa.Column("owner_type", sa.String(20), primary_key=True),
        sa.Column("owner_id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("balance_micro", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_top_up_entry_id", sa.String(40), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("balance_micro >= 0", name="non_negative"),
    )
    op.create_table(
        "credit_ledger",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_type", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False, index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount_micro", sa.BigInteger, nullable=False),
        sa.Column("balance_after_micro", sa.BigInteger, nullable=False),
        sa.Column("reservation_id", sa.String(40), nullable=True, index=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("usage", sa.Text, nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('grant', 'charge', 'refund', 'reservation', 'release')", name="kind"
        ),
    )
    op.create_index("ix_credit_ledger_owner", "credit_ledger", ["owner_type", "owner_id", "id"])
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_type", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=False),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("amount_micro", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint("amount_micro >= 0", name="non_negative"),
    )
    op.create_index(
        "ix_credit_reservations_open", "credit_reservations", ["owner_type", "owner_id", "status"]
    )
    op.create_table(
        "idempotency_records",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("headers", sa.Text, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in _PG_APPEND_ONLY:
            op.execute(statement)
    else:
        for verb in ("update", "delete"):
            op.execute(_SQLITE_APPEND_ONLY.format(verb=verb, verb_upper=verb.upper()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS credit_ledger_append_only ON credit_ledger")
        op.execute("DROP FUNCTION IF EXISTS credit_ledger_append_only()")
    op.drop_table("idempotency_records")
    op.drop_table("credit_reservations")
    op.drop_table("credit_ledger")
    op.drop_table("credit_balances")
