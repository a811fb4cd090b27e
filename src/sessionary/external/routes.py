"""Samsar's external-user routes (`/v1/external_users/...`) and the two it calls at the root:
`GET /users/verify_token` and `POST /v2/external/embeddings`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import AUTH_TOKEN_TYPE
from sessionary.accounts.principal import Caller, UserCaller, bearer_of, identify
from sessionary.accounts.routes import login_token_answer
from sessionary.accounts.tokens import TokenService
from sessionary.assistant.dependencies import Turns
from sessionary.assistant.routes import answer_turn, session_answer
from sessionary.billing.headers import credit_headers
from sessionary.billing.ledger import Owner, Settlement
from sessionary.billing.money import credits_number
from sessionary.billing.pricing import Pricing
from sessionary.billing.service import CreditsService
from sessionary.conversations.service import ConversationService, check_id
from sessionary.external.models import ExternalUser
from sessionary.external.schemas import (
    AssistantSessionRequest,
    ExternalUserIdentity,
    GrantRequest,
    LibraryRequest,
    LoginTokenRequest,
    PublishRequest,
    UserCompletionRequest,
    UserEmbeddingsRequest,
    UserPlainText,
    UserPromptRequest,
    UserSessionRequest,
    UtilityChargeRequest,
    identity_from_query,
)
from sessionary.external.service import ExternalUserService
from sessionary.kit.dependencies import AppDatabase, AppSettings, DbSession
from sessionary.kit.errors import InvalidRequest, Unauthorized
from sessionary.kit.metadata import check_metadata
from sessionary.search.embeddings_routes import answer_embeddings
from sessionary.search.routes import ingest_payload, ingest_plain_text

router = APIRouter(prefix="/external_users", tags=["external users"])
# Mounted at the server root, where samsar-js calls them.
root_router = APIRouter(tags=["external users"])


def _json(payload: dict[str, Any], settlement: Settlement | None = None) -> JSONResponse:
    return JSONResponse(payload, headers=credit_headers(settlement) if settlement else None)


async def _acting(
    request: Request, caller: Principal, identity: ExternalUserIdentity | None
) -> Principal:
    """Resolve the acting principal in a short read of its own (async routes hold no session)."""

    def resolve() -> Principal:
        with request.app.state.db.session(write=False) as session:
            return ExternalUserService(session).resolve(caller, identity)[0]

    return await anyio.to_thread.run_sync(resolve)


def _summary_of(request: Request, user_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    with request.app.state.db.session(write=False) as session:
        users = ExternalUserService(session)
        return users.with_summary(users.get(user_id), payload)


# Users, keys, credits


@router.post("/session", summary="Create or refresh an external user (account key)")
def user_session(body: UserSessionRequest, caller: Caller, session: DbSession) -> dict[str, Any]:
    if body.external_user is None:
        raise InvalidRequest("external_user is required.", param="external_user")
    users = ExternalUserService(session)
    user, created = users.upsert(caller.account_id, body.external_user)
    key = users.issue_key(user, rotate=body.rotate_api_key, by_token=caller.token_id is not None)
    balance = credits_number(users.balance(user))
    return users.with_summary(
        user,
        {
            "remainingCredits": balance,
            "created": created,
            "external_api_key": key,
            "externalApiKey": key,
        },
    )


@router.get("/credits", summary="An external user's balance")
def user_credits(caller: UserCaller, session: DbSession, request: Request) -> dict[str, Any]:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, identity_from_query(request.query_params))
    balance = CreditsService(session).balance(users.owner(user))
    return users.with_summary(user, balance.model_dump())


@router.post("/credits/grant", summary="Move credits from the account to an external user")
def grant_credits(body: GrantRequest, caller: Caller, session: DbSession) -> JSONResponse:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, body.external_user)
    granted, remaining, account_left = users.grant(user, body.input.credits)
    payload = users.with_summary(
        user,
        {
            "creditsGranted": credits_number(granted),
            "remainingCredits": credits_number(remaining),
            "internalRemainingCredits": credits_number(account_left),
        },
    )
    return _json(payload, Settlement(granted, account_left))


# Assistant


@router.post("/utils/assistant_session", summary="A blank assistant session for the user")
def assistant_session(
    caller: UserCaller, session: DbSession, body: AssistantSessionRequest | None = None
) -> dict[str, Any]:
    body = body or AssistantSessionRequest()
    users = ExternalUserService(session)
    acting, user = users.resolve(caller, body.external_user)
    row = ConversationService(session).create_session(
        acting, kind="assistant", name=body.session_name, metadata=check_metadata(body.metadata)
    )
    return users.with_summary(user, session_answer(row))


@router.post("/assistant/set_system_prompt", summary="Store or clear the user's own prompt")
def set_user_prompt(
    body: UserPromptRequest, caller: UserCaller, session: DbSession, turns: Turns
) -> dict[str, Any]:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, body.external_user)
    users.set_prompt(user, body.system_prompt)
    account = users.accounts.get_account(user.account_id)
    model = account.assistant_model or turns.providers.chat().name
    return users.with_summary(
        user,
        {
            "system_prompt": user.system_prompt,
            "model": model,
            "selected_assistant_model": model,
        },
    )


@router.post("/assistant/completion", summary="A turn billed to the user, on the account's model")
async def user_completion(
    body: UserCompletionRequest,
    caller: UserCaller,
    turns: Turns,
    settings: AppSettings,
    request: Request,
) -> Response:
    if body.session_id is None:
        raise InvalidRequest("Missing required parameter: 'session_id'.", param="session_id")
    session_id = check_id(body.session_id, "session_id")
    acting = await _acting(request, caller, body.external_user)
    return await answer_turn(
        turns,
        acting,
        body,
        route="/v1/external_users/assistant/completion",
        session_id=session_id,
        session_kind="assistant",
        default_truncation="auto",
        default_max_output_tokens=settings.default_max_output_tokens,
    )


# Embeddings


@router.post(
    "/generate_embeddings_from_plain_text", summary="A template of the user's, from plain text"
)
async def user_plain_text(
    body: UserPlainText, caller: UserCaller, request: Request
) -> JSONResponse:
    acting = await _acting(request, caller, body.external_user)
    assert acting.external_user_id is not None
    ingested = await ingest_plain_text(
        body, acting, request, "/v1/external_users/generate_embeddings_from_plain_text"
    )
    payload = await anyio.to_thread.run_sync(
        lambda: _summary_of(request, acting.external_user_id or "", ingest_payload(ingested))
    )
    return _json(payload, ingested.settlement)


@router.post("/embeddings", summary="Raw vectors (OpenAI's shape), billed to the caller")
async def user_embeddings(
    body: UserEmbeddingsRequest, caller: UserCaller, request: Request
) -> JSONResponse:
    acting = caller
    if body.external_user is not None or caller.external_user_id is not None:
        acting = await _acting(request, caller, body.external_user)
    return await answer_embeddings(body, acting, request, "/v1/external_users/embeddings")


@root_router.post(
    "/v2/external/embeddings",
    summary="Raw vectors, where samsar-js's createExternalEmbeddings asks",
)
async def v2_external_embeddings(
    body: UserEmbeddingsRequest, caller: UserCaller, request: Request
) -> JSONResponse:
    return await user_embeddings(body, caller, request)


# Usage incurred elsewhere


@router.post("/utils/usage_charge", summary="Charge the user for usage incurred elsewhere")
def usage_charge(
    body: UtilityChargeRequest, caller: UserCaller, session: DbSession, settings: AppSettings
) -> JSONResponse:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, body.external_user)
    settlement, details = users.charge_usage(user, body, Pricing(settings.pricing))
    payload = users.with_summary(
        user,
        {
            **details,
            "provider": body.provider,
            "model": body.model,
            "creditsCharged": credits_number(settlement.charged_micro),
            "remainingCredits": credits_number(settlement.remaining_micro),
        },
    )
    return _json(payload, settlement)


# The request library


@router.get("/requests", summary="The user's billed requests, newest first")
def list_requests(
    caller: UserCaller,
    session: DbSession,
    request: Request,
    limit: int = Query(default=20, ge=1, le=100),
) -> dict[str, Any]:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, identity_from_query(request.query_params))
    return users.with_summary(user, {"requests": users.library(user, limit)})


@router.post("/archive", summary="Hide a request from the user's library")
def archive_request(body: LibraryRequest, caller: UserCaller, session: DbSession) -> dict[str, Any]:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, body.external_user)
    return users.with_summary(user, {"request": users.archive(user, body.request_id)})


@router.post("/publish", summary="Publish a request of the user's library")
def publish_request(body: PublishRequest, caller: UserCaller, session: DbSession) -> dict[str, Any]:
    users = ExternalUserService(session)
    _, user = users.resolve(caller, body.external_user)
    item, publication = users.publish(
        user, body.request_id, title=body.title, description=body.description, tags=body.tags
    )
    return users.with_summary(user, {"request": item, "publication": publication})


# Login tokens


@router.post("/create_login_token", summary="A login token (and loginUrl) for the user")
def user_login_token(
    caller: UserCaller,
    session: DbSession,
    settings: AppSettings,
    request: Request,
    body: LoginTokenRequest | None = None,
) -> dict[str, Any]:
    body = body or LoginTokenRequest()
    users = ExternalUserService(session)
    acting, user = users.resolve(caller, body.external_user)
    ttl = timedelta(seconds=settings.login_token_ttl_seconds)
    issued = TokenService(session).create_login_token(acting, ttl, body.redirect)
    return users.with_summary(user, login_token_answer(issued, request, settings))


def _verified(session: Any, principal: Principal) -> dict[str, Any]:
    """samsar-js's VerifiedClientSessionResponse for an account or an external user."""
    users = ExternalUserService(session)
    if principal.external_user_id is None:
        account = users.accounts.get_account(principal.account_id)
        balance = users.ledger.spendable(Owner.account(account.id))
        return {
            "isExternalUser": False,
            "_id": account.id,
            "accountId": account.id,
            "username": account.name,
            "generationCredits": credits_number(balance),
        }
    user: ExternalUser = users.get(principal.external_user_id)
    s = users.summary(user)
    return {
        "isExternalUser": True,
        "_id": user.id,
        "accountId": user.account_id,
        "email": s["email"],
        "username": s["username"],
        "displayName": s["display_name"],
        "avatarUrl": s["avatar_url"],
        "provider": s["provider"],
        "externalUserId": s["external_user_id"],
        "uniqueKey": s["unique_key"],
        "externalAppId": s["external_app_id"],
        "externalCompanyId": s["external_company_id"],
        "generationCredits": s["generation_credits"],
        "totalRequests": s["total_requests"],
        "totalCreditsUsed": s["total_credits_used"],
        "totalCreditsRefunded": s["total_credits_refunded"],
        "totalCreditsPurchased": s["total_credits_purchased"],
        "lastRequestAt": s["last_request_at"],
        "lastPurchaseAt": s["last_purchase_at"],
        "lastActivityAt": s["last_activity_at"],
        "createdAt": s["created_at"],
        "updatedAt": s["updated_at"],
    }


@root_router.get("/users/verify_token", summary="Exchange a login token, or verify an auth token")
def verify_token(
    request: Request,
    db: AppDatabase,
    settings: AppSettings,
    login_token: str | None = Query(default=None, alias="loginToken", max_length=200),
    auth_token: str | None = Query(default=None, alias="authToken", max_length=200),
) -> dict[str, Any]:
    ttl = timedelta(seconds=settings.auth_token_ttl_seconds)
    if login_token is not None:
        # A GET that writes: spending the login token and issuing the auth token commit together.
        with db.session() as session:
            issued = TokenService(session).exchange(login_token, ttl)
            row = issued.row
            principal = Principal(row.account_id, None, external_user_id=row.external_user_id)
            return {
                **_verified(session, principal),
                "authToken": issued.plaintext,
                "expiresAt": row.expires_at.isoformat(),
            }
    auth_token = auth_token or bearer_of(request.headers)
    if auth_token is None:
        raise Unauthorized("Send loginToken or authToken.", code="missing_token")
    with db.session(write=False) as session:
        principal = identify(session, auth_token, None)
        answer = _verified(session, principal)
        if auth_token.startswith(AUTH_TOKEN_TYPE):
            answer["expiresAt"] = (
                TokenService(session).authenticate(auth_token).expires_at.isoformat()
            )
        return answer
