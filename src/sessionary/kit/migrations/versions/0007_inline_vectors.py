"""PostgreSQL: keep search vectors inside their rows.

pgvector's type defaults to EXTERNAL storage: once a row passes TOAST's 2 kB threshold (ours do,
with the record and filter JSON beside the vector) the vector moves to the TOAST table, and every
exact scan then fetches and reassembles each vector from there. MAIN storage lets PostgreSQL move
the JSON and text out first, so the vector stays in the row. Rows written before this migration
keep their layout until they are rewritten. SQLite has no such storage classes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_documents ALTER COLUMN embedding SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_documents ALTER COLUMN embedding SET STORAGE EXTERNAL")
