"""What every store does the same way: its database session, soft deletes, owner scoping in SQL
and cursor pagination on sortable ids.

Lists are scoped to their owner in the query (`readable_by`). A single object is fetched by id
(`by_id`, soft-deleted rows hidden) and its owner checked by the service with
`Principal.check_reach`, because the API answers another owner's object with 403, not 404.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

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


def page(query: Select[Any], column: InstrumentedAttribute[str], params: PageParams) -> Select[Any]:
    """Up to limit + 1 rows (the extra one tells whether more follow), in list order.

    `after` / `before` bound the window in list order, on a sortable id.
    """
    after, before, limit = params.after, params.before, params.limit
    if params.order == "asc":
        if after is not None:
            query = query.where(column > after)
        if before is not None:
            query = query.where(column < before)
        return query.order_by(column.asc()).limit(limit + 1)
    if after is not None:
        query = query.where(column < after)
    if before is not None:
        query = query.where(column > before)
    return query.order_by(column.desc()).limit(limit + 1)
