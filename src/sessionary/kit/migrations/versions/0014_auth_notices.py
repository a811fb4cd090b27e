"""PostgreSQL: a notice on channel `sessionary_auth` whenever a key or an account's prompt
changes, so that every server process can drop what it keeps of them (`kit/notified.py`).

Statement-level triggers, fired by any writer (the API, the CLI, plain SQL, a cascade from a
deleted account). `last_used_at` is left out: it is bookkeeping, written once a minute per key,
and no process keeps it. An INSERT needs no notice: a process never keeps a missing key.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION sessionary_auth_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sessionary_auth', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

_TRIGGERS = {
    "api_keys": "UPDATE OF id, prefix, key_hash, revoked_at, account_id, external_user_id OR DELETE",
    "accounts": "UPDATE OF system_prompt OR DELETE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table, events in _TRIGGERS.items():
        for name, when in (
            (f"{table}_auth_changed", events),
            (f"{table}_auth_truncated", "TRUNCATE"),
        ):
            op.execute(
                f"CREATE TRIGGER {name} AFTER {when} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION sessionary_auth_changed()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_changed ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_truncated ON {table}")
    op.execute("DROP FUNCTION IF EXISTS sessionary_auth_changed()")
