"""PostgreSQL: a GIN index over search documents' folded filter values.

Filtered searches add a containment condition (`folded @> {"field": "value"}`) beside each
string equality; with this index PostgreSQL reads only the matching documents instead of
parsing the JSON of every document of the template. `jsonb_path_ops` keeps the index small
and answers exactly `@>`. SQLite filters from cached columns and needs no index.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_search_documents_folded "
            "ON search_documents USING gin (folded jsonb_path_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_search_documents_folded")
