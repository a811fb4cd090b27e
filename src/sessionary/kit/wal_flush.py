"""PostgreSQL: a turn's end commits without holding its locks through the WAL flush, and the
turn is answered only once the flush is done.

A commit that waits for the disk (`synchronous_commit` on) keeps its row locks until its WAL is
flushed. A turn's end updates its owner's balance row, so every other hold and end of that
owner waited for this turn's flush: at 16 clients on two workers, half of PostgreSQL's
backends were waiting for that row lock, and a turn spent about a millisecond in the flush on
busy cores (`bench/pg_waits.py`). The end's statement now commits with `synchronous_commit`
off, which releases its locks once its commit record is in the WAL buffers, and `flush` then
waits for the disk on the same connection, with no lock held, before the turn is answered.

`flush` writes a non-transactional logical message with `flush => true` (PostgreSQL 17 and
later, any role): a WAL record after the end's commit record, flushed before the call returns,
and everything before it with it. A transaction that only takes an xid would not do: it writes
no WAL of its own before its commit record, so PostgreSQL commits it without waiting.

What it changes: other sessions may see a turn's end before it is on disk, for the time of one
flush, as they already see a hold; a crash in that window loses the end with everything after
it in the WAL, and the turn was not answered. Where the call is refused (older PostgreSQL, a
revoked function), ends commit as before, waiting for the disk: `Database.flushes_apart` is
probed once, on the engine's first connection.
Tests: `tests/test_wal_flush.py`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from sessionary.kit.raw_sql import run_fixed

FLUSH = "SELECT pg_logical_emit_message(false, 'sessionary', '', true)"


def can_flush(dbapi_connection: Any) -> bool:
    """Whether `FLUSH` runs on this server (a psycopg connection, not in autocommit)."""
    if dbapi_connection.info.server_version < 170000:
        return False
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(FLUSH)
        return True
    except Exception:  # refused: the function's EXECUTE revoked, or not there
        return False
    finally:
        dbapi_connection.rollback()


def flush(connection: Connection) -> None:
    """Wait until everything committed on this connection so far is on disk."""
    run_fixed(connection, FLUSH)
