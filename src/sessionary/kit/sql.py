"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, Table, insert, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sessionary.kit.raw_sql import run


def insert_ignoring_conflict(db: Session, model: Any, values: Mapping[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either engine; True when a row was inserted.

    Decided by RETURNING, not rowcount: drivers disagree on the rowcount of a skipped insert.
    """
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    first_key = inspect(model).primary_key[0]
    stmt = insert(model).values(**values).on_conflict_do_nothing().returning(first_key)
    return db.execute(stmt).first() is not None


def insert_rows(db: Session, rows: Sequence[Any]) -> None:
    """INSERT new ORM rows with Core, bypassing the unit of work (a tenth of its cost).

    For rows written once and never changed through this session: they stay transient, so a
    later attribute change on them is not saved. Attributes left unset get the column defaults.
    ORM rows still pending in the session are flushed first: a row inserted here may refer to
    one of them (a message to the session created in the same unit of work).
    Consecutive rows of one table with the same columns set go in one statement (executemany),
    run on the connection's DB-API cursor (`kit/raw_sql.py`).
    """
    if db.new:
        db.flush()
    batches: list[tuple[Any, list[dict[str, Any]]]] = []
    for row in rows:
        mapper = inspect(type(row))
        values = {
            column.name: row.__dict__[attr.key]
            for attr in mapper.column_attrs
            for column in attr.columns
            if attr.key in row.__dict__
        }
        last = batches[-1] if batches else None
        if last and last[0] is mapper.local_table and last[1][0].keys() == values.keys():
            last[1].append(values)
        else:
            batches.append((mapper.local_table, [values]))
    for table, values_list in batches:
        insert_values(db, table, values_list)


def insert_values(db: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT rows given as {column: value} (all with the same columns) in one statement, on the
    connection's DB-API cursor (`kit/raw_sql.py`). For the hot paths' rows, which building as
    ORM objects first (an instrumented `__init__`, then read back into a dict) cost about
    25 µs each. Unset columns get their defaults; no rows, no statement."""
    if not rows:
        return
    batch = rows if len(rows) > 1 else rows[0]
    run(db.connection(), _insert_into(table), batch)


_INSERTS: dict[Table, Insert] = {}


def _insert_into(table: Table) -> Insert:
    """One INSERT statement per table for the life of the process (`raw_sql` caches by it)."""
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS.setdefault(table, insert(table))
    return statement
