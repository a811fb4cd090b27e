"""Search: seal the private fields of templates written before privacy was one rule.

Before, a `retrievable: false` field was left out of the returned record only: its values stayed
in the template's schema (sample values, min / max) and in each document's echoed filter values.
This marks every such field `private` in the schema and removes what could be echoed: the
schema's values, the documents' `filters` entry, and the `folded` entry unless the field was
made filterable explicitly. A field was private when `field_options` (or a parent path) said
`retrievable: false`, or, for inline wrappers, when a document kept a filter value for it but
not the value itself. Self-contained on purpose: it must run the same whatever the code becomes.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_TEMPLATES = sa.table(
    "embedding_templates",
    sa.column("id", sa.String),
    sa.column("field_options", _JSON),
    sa.column("schema", _JSON),
)
_DOCUMENTS = sa.table(
    "search_documents",
    sa.column("id", sa.String),
    sa.column("template_id", sa.String),
    sa.column("record", _JSON),
    sa.column("filters", _JSON),
    sa.column("folded", _JSON),
)
_VALUE_KEYS = ("values", "sample", "candidates", "min", "max")
_CHUNK = 500


def _holds(record: Any, path: str) -> bool:
    node = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _option(path: str, options: dict[str, Any], flag: str) -> Any:
    """The most specific setting of a flag for a path (a parent path covers its children)."""
    parts = path.split(".")
    for depth in range(len(parts), 0, -1):
        flags = options.get(".".join(parts[:depth]))
        if isinstance(flags, dict) and flag in flags:
            return flags[flag]
    return None


def _chunks(bind: sa.Connection, template_id: str) -> Any:
    last = ""
    while True:
        rows = bind.execute(
            sa.select(
                _DOCUMENTS.c.id, _DOCUMENTS.c.record, _DOCUMENTS.c.filters, _DOCUMENTS.c.folded
            )
            .where(_DOCUMENTS.c.template_id == template_id, _DOCUMENTS.c.id > last)
            .order_by(_DOCUMENTS.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def upgrade() -> None:
    bind = op.get_bind()
    templates = bind.execute(
        sa.select(_TEMPLATES.c.id, _TEMPLATES.c.field_options, _TEMPLATES.c.schema)
    ).all()
    for template_id, options, schema in templates:
        options = options if isinstance(options, dict) else {}
        fields = (schema or {}).get("fields", {})
        private = {p for p in fields if _option(p, options, "retrievable") is False}
        for rows in _chunks(bind, template_id):
            for _, record, filters, _ in rows:
                private.update(p for p in (filters or {}) if not _holds(record or {}, p))
        if not private:
            continue
        for path in private & set(fields):
            info = fields[path]
            for key in _VALUE_KEYS:
                info.pop(key, None)
            info["private"] = True
            explicit = (
                info.get("filterable") is True or _option(path, options, "filterable") is True
            )
            info["filterable"] = explicit
        bind.execute(
            sa.update(_TEMPLATES).where(_TEMPLATES.c.id == template_id).values(schema=schema)
        )
        kept = {p for p in private if fields.get(p, {}).get("filterable") is True}
        for rows in _chunks(bind, template_id):
            for doc_id, _, filters, folded in rows:
                new_filters = {k: v for k, v in (filters or {}).items() if k not in private}
                new_folded = {
                    k: v for k, v in (folded or {}).items() if k not in private or k in kept
                }
                if new_filters != (filters or {}) or new_folded != (folded or {}):
                    bind.execute(
                        sa.update(_DOCUMENTS)
                        .where(_DOCUMENTS.c.id == doc_id)
                        .values(filters=new_filters, folded=new_folded)
                    )


def downgrade() -> None:
    """Nothing to restore: the removed values were copies that should not have been kept."""
