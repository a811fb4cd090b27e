"""HTTP routes of the billing domain."""

from __future__ import annotations

from fastapi import APIRouter

from sessionary.accounts.principal import UserCaller
from sessionary.billing.ledger import Owner
from sessionary.billing.schemas import CreditsBalance
from sessionary.billing.service import CreditsService
from sessionary.kit.dependencies import DbSession

router = APIRouter(tags=["credits"])


@router.get("/credits", response_model=CreditsBalance, summary="The caller's remaining credits")
def get_credits(caller: UserCaller, db: DbSession) -> CreditsBalance:
    return CreditsService(db).balance(Owner.of(caller))
