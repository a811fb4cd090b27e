"""HTTP routes of the accounts domain."""

from __future__ import annotations

from fastapi import APIRouter

from sessionary.accounts.principal import Caller
from sessionary.accounts.schemas import WhoAmI
from sessionary.accounts.service import AccountService
from sessionary.kit.dependencies import DbSession

router = APIRouter(tags=["accounts"])


@router.get("/me", response_model=WhoAmI, summary="The account behind the presented key")
def who_am_i(caller: Caller, session: DbSession) -> WhoAmI:
    account = AccountService(session).get_account(caller.account_id)
    return WhoAmI(account_id=account.id, name=account.name, api_key_id=caller.api_key_id)
