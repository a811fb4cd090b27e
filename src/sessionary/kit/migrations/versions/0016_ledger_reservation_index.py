"""The ledger's index on `reservation_id` goes: no statement reads the ledger by reservation
(a hold's entries are written with its id and listed by owner or account), and every turn paid
for it on three inserts: on SQLite 2.3 of a turn's 30 WAL pages (`bench`-style turns on
`/v1/assistant/completion`), on PostgreSQL three index tuples in its hold and end.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_INDEX = "ix_credit_ledger_reservation_id"


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="credit_ledger", if_exists=True)


def downgrade() -> None:
    op.create_index(_INDEX, "credit_ledger", ["reservation_id"], if_not_exists=True)
