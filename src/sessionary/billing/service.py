"""Balance queries and grants as the routes and the CLI need them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.money import credits_number
from sessionary.billing.schemas import CreditsBalance, TopUp


class CreditsService:
    def __init__(self, db: Session) -> None:
        self.ledger = Ledger(db)

    def balance(self, owner: Owner) -> CreditsBalance:
        entry = self.ledger.last_top_up(owner)
        top_up = (
            TopUp(
                id=entry.id,
                creditsApplied=credits_number(entry.amount_micro),
                paymentDate=entry.created_at.isoformat(),
                billingReason=entry.note,
            )
            if entry
            else None
        )
        return CreditsBalance(
            remainingCredits=credits_number(self.ledger.spendable(owner)), lastTopUp=top_up
        )

    def grant(self, owner: Owner, micro: int, note: str | None = None) -> int:
        return self.ledger.grant(owner, micro, note=note)
