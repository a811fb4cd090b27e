"""SQL for assistant profiles."""

from __future__ import annotations

from sqlalchemy import delete, select

from sessionary.kit.store import Store
from sessionary.profiles.models import AssistantProfile


class ProfileStore(Store):
    def get(self, profile_id: str) -> AssistantProfile | None:
        return self.db.get(AssistantProfile, profile_id)

    def remove(self, profile_id: str) -> None:
        self.db.execute(delete(AssistantProfile).where(AssistantProfile.id == profile_id))

    def of_account(self, account_id: str) -> list[AssistantProfile]:
        return list(
            self.db.scalars(
                select(AssistantProfile)
                .where(AssistantProfile.account_id == account_id)
                .order_by(AssistantProfile.id)
            )
        )
