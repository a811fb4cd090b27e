"""PostgreSQL: a turn's end commits without holding its locks through the WAL flush, and the
turn is answered only once the flush is done.

A commit that waits for the disk (`synchronous_commit` on) keeps its row locks until its WAL is
flushed. A turn's end updates its owner's balance row, so every other hold and end of that
owner waited for this turn's flush: at 16 clients on two workers, half of PostgreSQL's
backends were waiting for that row lock, and a turn spent about a millisecond in the flush on
busy cores (`bench/pg_waits.py`). The end's statement now commits with `synchronous_commit`
off, which releases its locks once its commit record is in the WAL buffers, and `GroupFlush`
then waits for the disk, with no lock held, before the turn is answered; the ends of a process that
wait at the same time share one flush (`GroupFlush`).

`FLUSH` writes a non-transactional logical message with `flush => true` (PostgreSQL 17 and
later, any role): a WAL record after the end's commit record, flushed before the call returns,
and everything before it with it. A transaction that only takes an xid would not do: it writes
no WAL of its own before its commit record, so PostgreSQL commits it without waiting.

What it changes: other sessions may see a turn's end before it is on disk, for the time of one
flush, as they already see a hold; a crash in that window loses the end with everything after
it in the WAL, and the turn was not answered. Where the call is refused (older PostgreSQL, a
revoked function), or synchronous replication is on (`synchronous_standby_names`: a commit
that waits also waits for the standbys, a flush does not), ends commit as before, waiting:
`GroupFlush.apart` is probed once, on the engine's first connection, so a server whose
replication is made synchronous later needs a restart of Sessionary to follow. An end commits
apart only while other turns of its process are under way (`billing/metering._end_apart`):
alone, nobody waits for its lock, and a commit that waits is one round trip less.
Tests: `tests/test_wal_flush.py`.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Connection, Engine, event

from sessionary.kit.raw_sql import run_fixed

FLUSH = "SELECT pg_logical_emit_message(false, 'sessionary', '', true)"
# In a session's `info`: its statement committed apart from its flush, which its unit of work
# then waits for before it answers (`kit/at_once.py`).
FLUSH_OWED = "sessionary.flush_owed"


# A commit that waits also waits for synchronous standbys; `FLUSH` only for the local disk.
STANDBYS = "SELECT current_setting('synchronous_standby_names')"


def can_flush(dbapi_connection: Any) -> bool:
    """Whether ends may commit apart from their flush on this server (a psycopg connection,
    not in autocommit): `FLUSH` runs, and no synchronous standby is named."""
    if dbapi_connection.info.server_version < 170000:
        return False
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(STANDBYS)
            row = cursor.fetchone()
            if row is None or str(row[0]).strip():
                return False
            cursor.execute(FLUSH)
        return True
    except Exception:  # refused: the function's EXECUTE revoked, or not there
        return False
    finally:
        dbapi_connection.rollback()


class GroupFlush:
    """The ends of one process wait for the disk together, as PostgreSQL's own commits do: an
    end that finds no flush under way sends `FLUSH` on its connection and leads; ends that
    ask meanwhile wait for the next one, which covers them all (one round trip for a group,
    not one an end). A ticket is taken after its end committed, and a flush covers the
    tickets taken before it was sent, so its WAL record comes after their commit records.
    When a leader's flush fails, that end raises, and a waiter it was to cover leads the
    next one."""

    def __init__(self, engine: Engine) -> None:
        self.apart = False  # whether ends commit apart from their flush (`can_flush`)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "first_connect", self._probe)
        self._state = threading.Condition()
        self._asked = 0  # tickets handed out
        self._flushed = 0  # every ticket up to this one is on disk
        self._leading = False

    def _probe(self, dbapi_connection: Any, _record: Any) -> None:
        self.apart = can_flush(dbapi_connection)

    def wait(self, connection: Connection) -> None:
        """Return once everything committed in this process before the call is on disk."""
        with self._state:
            self._asked += 1
            mine = self._asked
            while self._flushed < mine:
                if not self._leading:
                    self._leading = True
                    covers = self._asked
                    break
                self._state.wait()
            else:
                return
        flushed = False
        try:
            run_fixed(connection, FLUSH)
            flushed = True
        finally:
            with self._state:
                if flushed:
                    self._flushed = max(self._flushed, covers)
                self._leading = False
                self._state.notify_all()
