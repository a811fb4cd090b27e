"""SQL for external users and their request library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from sessionary.billing.models import LedgerEntry
from sessionary.conversations.models import StoredResponse
from sessionary.external.models import ExternalUser, LibraryMark
from sessionary.kit.pagination import PageParams
from sessionary.kit.sql import insert_ignoring_conflict
from sessionary.kit.store import Store, page

LibraryRow = tuple[LedgerEntry, LibraryMark | None, str | None]


class ExternalUserStore(Store):
    def get(self, user_id: str) -> ExternalUser | None:
        return self.db.get(ExternalUser, user_id)

    def find(self, account_id: str, provider: str, unique_key: str) -> ExternalUser | None:
        return self.db.scalars(
            select(ExternalUser)
            .where(ExternalUser.account_id == account_id)
            .where(ExternalUser.provider == provider)
            .where(ExternalUser.unique_key == unique_key)
        ).first()

    def find_by_platform_id(
        self, account_id: str, provider: str, external_user_id: str
    ) -> ExternalUser | None:
        return self.db.scalars(
            select(ExternalUser)
            .where(ExternalUser.account_id == account_id)
            .where(ExternalUser.provider == provider)
            .where(ExternalUser.external_user_id == external_user_id)
            .order_by(ExternalUser.id)
            .limit(1)
        ).first()

    def page_of_account(
        self, account_id: str, params: PageParams
    ) -> tuple[list[ExternalUser], bool]:
        """One page of the account's users, and whether more lie beyond it."""
        query = select(ExternalUser).where(ExternalUser.account_id == account_id)
        return page(self.db, query, ExternalUser.id, params)

    def insert(self, values: Mapping[str, Any]) -> bool:
        """False when a concurrent request created the same (account, provider, unique_key)."""
        return insert_ignoring_conflict(self.db, ExternalUser, values)

    # The library: the user's charges, with their marks and (for turns) their session

    def _library_query(self, user_id: str) -> Any:
        return (
            select(LedgerEntry, LibraryMark, StoredResponse.session_id)
            .outerjoin(LibraryMark, LibraryMark.entry_id == LedgerEntry.id)
            .outerjoin(StoredResponse, StoredResponse.id == LedgerEntry.subject_id)
            .where(LedgerEntry.owner_type == "external_user")
            .where(LedgerEntry.owner_id == user_id)
            .where(LedgerEntry.kind == "charge")
        )

    def library(self, user_id: str, limit: int) -> list[LibraryRow]:
        query = (
            self._library_query(user_id)
            .where(LibraryMark.archived_at.is_(None))
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
        )
        return [(e, m, s) for e, m, s in self.db.execute(query)]

    def charge_entry(self, request_id: str) -> LedgerEntry | None:
        """A charge by its id, or the latest charge for an object id (a response, a template)."""
        entry = self.db.get(LedgerEntry, request_id)
        if entry is not None:
            return entry if entry.kind == "charge" else None
        return self.db.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.subject_id == request_id)
            .where(LedgerEntry.kind == "charge")
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        ).first()

    def library_row(self, user_id: str, entry_id: str) -> LibraryRow | None:
        row = self.db.execute(
            self._library_query(user_id).where(LedgerEntry.id == entry_id)
        ).first()
        return (row[0], row[1], row[2]) if row else None

    def mark(self, entry: LedgerEntry) -> LibraryMark:
        mark = self.db.get(LibraryMark, entry.id)
        if mark is None:
            mark = LibraryMark(
                entry_id=entry.id, account_id=entry.account_id, external_user_id=entry.owner_id
            )
            self.db.add(mark)
        return mark
