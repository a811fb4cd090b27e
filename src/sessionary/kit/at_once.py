"""A unit of work sent as one statement, in autocommit: a turn's transcript and its charge.

On PostgreSQL a turn's end was four statements: `BEGIN`, the transcript's rows (held back and
sent together, `kit/raw_sql.holding_inserts`), the settle, `COMMIT`. A single statement is
atomic on its own, so the rows can go out inside the settle's statement, as data-modifying
CTEs, on a connection in autocommit: one round trip instead of four, and all of it commits
or none of it does.

Whatever cannot go out that way is not tried that way: a unit that runs any other statement
raises `NotAtOnce` before anything is sent. And a statement that fails wrote nothing, so the
caller then does the same work the usual way (`Database.commit_apart`), which tells the
transcript's failure from the charge's: trying at once never decides what a failure means.
The last statement must fail rather than write nothing of its own when it cannot do its part
(a settle that finds its hold released: `Ledger.settle_alone(or_fail=True)`), or the rows sent
with it would be kept without it: a stored answer nobody paid for. Where the database allows it
and other turns are under way, the statement commits without waiting for the disk, and the unit
waits for the flush after it, holding no lock (`kit/wal_flush.py`).
Tests: `tests/test_at_once.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy.orm import Session

from sessionary.kit.db import Database
from sessionary.kit.loop_units import WouldBlock
from sessionary.kit.raw_sql import NotAtOnce, holding_inserts
from sessionary.kit.wal_flush import FLUSH_OWED

T = TypeVar("T")

log = structlog.get_logger("sessionary.db")


def commit_at_once(
    database: Database, part: Callable[[Session], None], rest: Callable[[Session], T]
) -> tuple[bool, T | None]:
    """PostgreSQL: `part`'s plain INSERTs and `rest`'s one statement, sent as one statement in
    autocommit. (True, what `rest` answered) once that statement committed; (False, None),
    with nothing written, when it was not sent (SQLite; `part` or `rest` ran something else)
    or it failed. When the connection was lost, the error is raised instead: whether the
    statement committed is unknown, and the caller must not do the work again as if not; so
    is an error after the statement was answered (it committed). An error before that, even
    one raised by the driver before sending (a parameter it cannot encode), wrote nothing."""
    if database.dialect != "postgresql":
        return False, None
    with database.single_statements() as db:
        connection = db.connection()
        held = None
        try:
            with holding_inserts(connection, at_once=True) as held:
                assert held is not None
                part(db)
                held.last = True
                answer = rest(db)
            if db.info.pop(FLUSH_OWED, False):  # `rest` committed without waiting for the disk
                database.group_flush.wait(connection)
            return True, answer
        except WouldBlock as blocked:  # given up on the loop: on to a worker, unless committed
            if held is not None and held.at_once_done:
                raise RuntimeError("a wait on the event loop after the end committed") from blocked
            raise
        except Exception as exc:
            if connection.invalidated or (held is not None and held.at_once_done):
                raise  # lost with the connection, or failed after the statement committed
            if not isinstance(exc, NotAtOnce):
                log.info("not_at_once", reason=str(exc)[:200])
            db.rollback()  # a flush the refusal interrupted leaves the session to roll back
            return False, None
