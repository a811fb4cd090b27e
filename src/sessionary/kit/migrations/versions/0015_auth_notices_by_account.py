"""PostgreSQL: the notice of a changed key or prompt names the account it belongs to, so a
server process drops what it keeps of that account alone (`kit/notified.py`). Under 0014 every
notice emptied every process's cache: one account changing its prompt in a loop kept every
other account's key checks and prompts going to the database.

The triggers become row-level, named as before, and send the changed row's account id (its
value before the change: what a process may have kept). PostgreSQL sends one notice per
distinct payload per transaction, so deleting an account with many keys sends one. TRUNCATE
keeps 0014's trigger, whose empty notice drops everything.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION sessionary_auth_row_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('sessionary_auth', coalesce(to_jsonb(OLD) ->> TG_ARGV[0], ''));
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

# table: (the events of 0014, the column holding the account id)
_TRIGGERS = {
    "api_keys": (
        "UPDATE OF id, prefix, key_hash, revoked_at, account_id, external_user_id OR DELETE",
        "account_id",
    ),
    "accounts": ("UPDATE OF system_prompt OR DELETE", "id"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table, (events, column) in _TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_changed ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_auth_changed AFTER {events} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION sessionary_auth_row_changed('{column}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (events, _column) in _TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_auth_changed ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_auth_changed AFTER {events} ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION sessionary_auth_changed()"
        )
    op.execute("DROP FUNCTION IF EXISTS sessionary_auth_row_changed()")
