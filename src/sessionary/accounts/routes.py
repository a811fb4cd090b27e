"""HTTP routes of the accounts domain: who am I, login tokens, auth token revocation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor

from sessionary.accounts.keys import AUTH_TOKEN_TYPE
from sessionary.accounts.models import ApiKey
from sessionary.accounts.payloads import login_token_answer, token_info
from sessionary.accounts.principal import Caller, UserCaller, bearer_of
from sessionary.accounts.schemas import KeyCreate, KeyObject, RevokeToken, WhoAmI
from sessionary.accounts.service import AccountService
from sessionary.accounts.tokens import TokenService
from sessionary.kit.dependencies import AppSettings, DbSession
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope, paginate

router = APIRouter(tags=["accounts"])


class TokenIdConvertor(Convertor[str]):
    """Token ids only (`tok_…`), so `/auth_tokens/revoke` never also matches the DELETE route."""

    regex = "tok_[0-9A-Za-z]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("token_id", TokenIdConvertor())


@router.get("/me", response_model=WhoAmI, summary="The account (or external user) calling")
def who_am_i(caller: UserCaller, db: DbSession) -> WhoAmI:
    account = AccountService(db).get_account(caller.account_id)
    return WhoAmI(
        account_id=account.id,
        name=account.name,
        api_key_id=caller.api_key_id,
        external_user_id=caller.external_user_id,
        system_prompt=account.system_prompt if caller.external_user_id is None else None,
        assistant_model=account.assistant_model if caller.external_user_id is None else None,
    )


@router.post("/create_login_token", summary="A short-lived, single-use login token")
def create_login_token(
    caller: Caller, db: DbSession, settings: AppSettings, request: Request
) -> dict[str, Any]:
    ttl = timedelta(seconds=settings.login_token_ttl_seconds)
    issued = TokenService(db).create_login_token(caller, ttl)
    return login_token_answer(issued, str(request.base_url), settings)


@router.post("/auth_tokens/revoke", summary="Revoke an auth token (its own, or the account's)")
def revoke_auth_token(
    caller: UserCaller, db: DbSession, request: Request, body: RevokeToken | None = None
) -> dict[str, Any]:
    token = body.auth_token if body else None
    token = token or bearer_of(request.headers)
    if not token or not token.startswith(AUTH_TOKEN_TYPE):
        raise InvalidRequest("Name the auth token to revoke as authToken.", param="authToken")
    row = TokenService(db).revoke(caller, token)
    return {"revoked": True, "expiresAt": row.expires_at.isoformat()}


@router.get("/auth_tokens", summary="The account's live auth tokens (ids, never the tokens)")
def list_auth_tokens(caller: Caller, db: DbSession, page: Page) -> dict[str, Any]:
    rows = TokenService(db).live_tokens(caller)
    chosen, has_more = paginate(rows, lambda r: r.id, page)
    data = [token_info(r).model_dump(mode="json") for r in chosen]
    return envelope(data, has_more)


@router.delete(
    "/auth_tokens/{token_id:token_id}", summary="Revoke one auth token and its descendants"
)
def revoke_auth_token_by_id(token_id: str, caller: Caller, db: DbSession) -> dict[str, Any]:
    row = TokenService(db).revoke_by_id(caller, token_id)
    return {"id": row.id, "object": "auth_token.deleted", "deleted": True}


def _key_object(key: ApiKey, plaintext: str | None = None) -> KeyObject:
    return KeyObject(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        key=plaintext,
    )


@router.get("/keys", summary="The account's API keys (prefixes, never the secrets)")
def list_keys(caller: Caller, db: DbSession, page: Page) -> dict[str, Any]:
    rows = AccountService(db).account_keys(caller.account_id)
    chosen, has_more = paginate(rows, lambda k: k.id, page)
    return envelope([_key_object(k).model_dump(mode="json") for k in chosen], has_more)


@router.post("/keys", response_model=KeyObject, summary="Create an API key (its secret shown once)")
def create_key(caller: Caller, db: DbSession, body: KeyCreate | None = None) -> KeyObject:
    name = body.name if body else None
    issued = AccountService(db).issue_key_for(caller, name)
    return _key_object(issued.key, issued.plaintext)


@router.delete("/keys/{key_id}", response_model=KeyObject, summary="Revoke an API key at once")
def revoke_key(key_id: ObjectId, caller: Caller, db: DbSession) -> KeyObject:
    return _key_object(AccountService(db).revoke_own_key(caller, key_id))
