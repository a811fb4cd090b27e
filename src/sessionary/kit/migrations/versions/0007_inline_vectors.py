"""PostgreSQL: keep search documents, vector and filter values, inside their rows.

pgvector's type defaults to EXTERNAL storage: once a row passes TOAST's 2 kB threshold (ours do,
with the record and filter JSON beside the vector) the vector moves to the TOAST table, and every
exact scan then fetches and reassembles each vector from there. Rows are kept whole up to about
4 kB instead (`toast_tuple_target`), and beyond that MAIN storage has PostgreSQL move the JSON and
text out before the vector. Rows written before this migration keep their layout until they are
rewritten. SQLite has no such storage classes.

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
        op.execute("ALTER TABLE search_documents SET (toast_tuple_target = 4080)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_documents ALTER COLUMN embedding SET STORAGE EXTERNAL")
        op.execute("ALTER TABLE search_documents RESET (toast_tuple_target)")
