"""Wire shapes of the billing domain (samsar-js's CreditsBalanceResponse)."""

from __future__ import annotations

from pydantic import BaseModel


class TopUp(BaseModel):
    id: str
    creditsApplied: float
    paymentDate: str
    paymentType: str = "grant"
    billingReason: str | None = None


class CreditsBalance(BaseModel):
    remainingCredits: float
    lastTopUp: TopUp | None = None
