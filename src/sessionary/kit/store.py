"""What every store does the same way: its database session, soft deletes, owner scoping in SQL
and cursor pagination on sortable ids (in SQL: a page never loads the rest of the list).

Lists are scoped to their owner in the query (`readable_by`). A single object is fetched by id
(`by_id`, soft-deleted rows hidden) and its owner checked by the service with
`Principal.check_reach`, because the API answers another owner's object with 403, not 404.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams, travels_backwards

T = TypeVar("T")


class Scope(Protocol):
    """Who a list is read for: an account, or one of its external users."""

    @property
    def account_id(self) -> str: ...

    @property
    def external_user_id(self) -> str | None: ...


class Store:
    def __init__(self, db: Session) -> None:
        self.db = db

    def add(self, row: T) -> T:
        self.db.add(row)
        self.db.flush()
        return row

    def by_id(self, model: type[T], row_id: str) -> T | None:
        """The row with this id; a soft-deleted one is as absent as a missing one."""
        row = self.db.get(model, row_id)
        if row is None or getattr(row, "deleted_at", None) is not None:
            return None
        return row

    @staticmethod
    def soft_delete(row: Any) -> None:
        """Hidden from every read at once; the row stays for the ledger's references."""
        row.deleted_at = utcnow()


def live(query: Select[Any], model: Any) -> Select[Any]:
    return query.where(model.deleted_at.is_(None))


def readable_by(query: Select[Any], model: Any, scope: Scope) -> Select[Any]:
    """The live rows of one owner: the account's own, or one external user's."""
    query = live(query, model).where(model.account_id == scope.account_id)
    if scope.external_user_id is None:
        return query.where(model.external_user_id.is_(None))
    return query.where(model.external_user_id == scope.external_user_id)


def page(
    db: Session, query: Select[Any], column: InstrumentedAttribute[str], params: PageParams
) -> tuple[list[Any], bool]:
    """One page of rows in list order, and whether more lie beyond it in the direction of travel.

    Ids sort by creation time, so `after` / `before` are comparisons on the id column. A page
    asked for with `before` alone is read from the cursor backwards (the `limit` rows nearest to
    it) and turned around, so it is the previous page, not the top of the list. One extra row is
    read to tell whether more follow.
    """
    after, before, limit = params.after, params.before, params.limit
    ascending = params.order == "asc"
    if after is not None:
        query = query.where(column > after if ascending else column < after)
    if before is not None:
        query = query.where(column < before if ascending else column > before)
    backwards = travels_backwards(params)
    forward_sql = ascending != backwards
    query = query.order_by(column.asc() if forward_sql else column.desc()).limit(limit + 1)
    rows = list(db.scalars(query))
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return rows, has_more
