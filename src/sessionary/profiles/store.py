"""SQL for assistant profiles."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sessionary.profiles.models import AssistantProfile


class ProfileStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: AssistantProfile) -> AssistantProfile:
        self.session.add(row)
        self.session.flush()
        return row

    def get(self, profile_id: str) -> AssistantProfile | None:
        return self.session.get(AssistantProfile, profile_id)

    def remove(self, profile_id: str) -> None:
        self.session.execute(delete(AssistantProfile).where(AssistantProfile.id == profile_id))

    def of_account(self, account_id: str) -> list[AssistantProfile]:
        return list(
            self.session.scalars(
                select(AssistantProfile)
                .where(AssistantProfile.account_id == account_id)
                .order_by(AssistantProfile.id)
            )
        )
