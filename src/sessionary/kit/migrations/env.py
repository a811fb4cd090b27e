"""Alembic environment: always run through `sessionary.kit.migrate`, which hands us a connection."""

from __future__ import annotations

from alembic import context

from sessionary.kit.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by sessionary.kit.migrate
    raise RuntimeError("Run migrations with `sessionary migrate`, not the alembic command.")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
