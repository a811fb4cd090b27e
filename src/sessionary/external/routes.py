"""Samsar's external-user routes (`/v1/external_users/...`) and the two it calls at the root:
`GET /users/verify_token` and `POST /v2/external/embeddings`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from sessionary.accounts.payloads import login_token_answer
from sessionary.accounts.principal import Caller, UserCaller, bearer_of
from sessionary.accounts.tokens import TokenService
from sessionary.assistant.answers import turn_response
from sessionary.assistant.dependencies import AppAssistant
from sessionary.assistant.payloads import session_object
from sessionary.billing.headers import credit_headers
from sessionary.billing.ledger import Settlement
from sessionary.billing.money import credits_number
from sessionary.billing.pricing import Pricing
from sessionary.billing.service import CreditsService
from sessionary.conversations.service import ConversationService, check_id
from sessionary.external.payloads import (
    charge_details,
    library_item,
    publication,
    summary,
    verified,
    with_summary,
)
from sessionary.external.schemas import (
    AssistantSessionRequest,
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
from sessionary.external.service import (
    ExternalUserService,
    acting_principal,
    exchange_login_token,
    facts_of,
    verify_auth_token,
)
from sessionary.kit.dependencies import AppDatabase, AppSettings, DbSession
from sessionary.kit.errors import InvalidRequest, Unauthorized
from sessionary.kit.json_answer import JSONAnswer
from sessionary.kit.metadata import check_metadata
from sessionary.kit.pagination import Page, envelope
from sessionary.search.answers import ingest_summary
from sessionary.search.dependencies import AppSearch
from sessionary.search.raw_embeddings import embeddings_payload

router = APIRouter(prefix="/external_users", tags=["external users"])
# Mounted at the server root, where samsar-js calls them.
root_router = APIRouter(tags=["external users"])


def _json(payload: dict[str, Any], settlement: Settlement | None = None) -> JSONAnswer:
    return JSONAnswer(payload, headers=credit_headers(settlement) if settlement else None)


# Users, keys, credits


@router.get("", summary="The account's external users, with their balances")
def list_users(caller: Caller, db: DbSession, page: Page) -> dict[str, Any]:
    users = ExternalUserService(db)
    rows, has_more = users.listing(caller, page)
    return envelope([summary(users.facts(u)) for u in rows], has_more)


@router.post("/session", summary="Create or refresh an external user (account key)")
def user_session(body: UserSessionRequest, caller: Caller, db: DbSession) -> dict[str, Any]:
    if body.external_user is None:
        raise InvalidRequest("external_user is required.", param="external_user")
    users = ExternalUserService(db)
    user, created = users.upsert(caller.account_id, body.external_user)
    key = users.issue_key(user, rotate=body.rotate_api_key, by_token=caller.token_id is not None)
    balance = credits_number(users.balance(user))
    return with_summary(
        users.facts(user),
        {
            "remainingCredits": balance,
            "created": created,
            "external_api_key": key,
            "externalApiKey": key,
        },
    )


@router.get("/credits", summary="An external user's balance")
def user_credits(caller: UserCaller, db: DbSession, request: Request) -> dict[str, Any]:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, identity_from_query(request.query_params))
    balance = CreditsService(db).balance(users.owner(user))
    return with_summary(users.facts(user), balance.model_dump())


@router.post("/credits/grant", summary="Move credits from the account to an external user")
def grant_credits(body: GrantRequest, caller: Caller, db: DbSession) -> JSONAnswer:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, body.external_user)
    granted, remaining, account_left = users.grant(user, body.input.credits)
    payload = with_summary(
        users.facts(user),
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
    caller: UserCaller, db: DbSession, body: AssistantSessionRequest | None = None
) -> dict[str, Any]:
    body = body or AssistantSessionRequest()
    users = ExternalUserService(db)
    acting, user = users.resolve(caller, body.external_user)
    row = ConversationService(db).create_session(
        acting, kind="assistant", name=body.session_name, metadata=check_metadata(body.metadata)
    )
    return with_summary(users.facts(user), session_object(row))


@router.post("/assistant/set_system_prompt", summary="Store or clear the user's own prompt")
def set_user_prompt(
    body: UserPromptRequest, caller: UserCaller, db: DbSession, assistant: AppAssistant
) -> dict[str, Any]:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, body.external_user)
    users.set_prompt(user, body.system_prompt)
    model = users.account_model(user) or assistant.chat_model_name()
    return with_summary(
        users.facts(user),
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
    assistant: AppAssistant,
    database: AppDatabase,
) -> Response:
    if body.session_id is None:
        raise InvalidRequest("Missing required parameter: 'session_id'.", param="session_id")
    session_id = check_id(body.session_id, "session_id")
    acting = await acting_principal(database, caller, body.external_user)
    outcome = await assistant.answer(
        acting,
        body,
        route="/v1/external_users/assistant/completion",
        session_id=session_id,
        session_kind="assistant",
        default_truncation="auto",
    )
    return turn_response(outcome)


# Embeddings


@router.post(
    "/generate_embeddings_from_plain_text", summary="A template of the user's, from plain text"
)
async def user_plain_text(
    body: UserPlainText, caller: UserCaller, search: AppSearch, database: AppDatabase
) -> JSONAnswer:
    acting = await acting_principal(database, caller, body.external_user)
    assert acting.external_user_id is not None
    ingested = await search.ingest_plain_text(
        acting, body, route="/v1/external_users/generate_embeddings_from_plain_text"
    )
    facts = await facts_of(database, acting.external_user_id)
    return _json(with_summary(facts, ingest_summary(ingested.template)), ingested.settlement)


@router.post("/embeddings", summary="Raw vectors (OpenAI's shape), billed to the caller")
async def user_embeddings(
    body: UserEmbeddingsRequest, caller: UserCaller, search: AppSearch, database: AppDatabase
) -> JSONAnswer:
    acting = caller
    if body.external_user is not None or caller.external_user_id is not None:
        acting = await acting_principal(database, caller, body.external_user)
    embedded = await search.embeddings(acting, body, "/v1/external_users/embeddings")
    return _json(embeddings_payload(embedded, body.encoding_format), embedded.settlement)


@root_router.post(
    "/v2/external/embeddings",
    summary="Raw vectors, where samsar-js's createExternalEmbeddings asks",
)
async def v2_external_embeddings(
    body: UserEmbeddingsRequest, caller: UserCaller, search: AppSearch, database: AppDatabase
) -> JSONAnswer:
    return await user_embeddings(body, caller, search, database)


# Usage incurred elsewhere


@router.post("/utils/usage_charge", summary="Charge the user for usage incurred elsewhere")
def usage_charge(
    body: UtilityChargeRequest, caller: UserCaller, db: DbSession, settings: AppSettings
) -> JSONAnswer:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, body.external_user)
    charge = users.charge_usage(user, body, Pricing(settings.pricing))
    settlement = charge.settlement
    payload = with_summary(
        users.facts(user),
        {
            **charge_details(charge, body.pricing_multiplier),
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
    db: DbSession,
    request: Request,
    limit: int = Query(default=20, ge=1, le=100),
) -> dict[str, Any]:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, identity_from_query(request.query_params))
    return with_summary(
        users.facts(user), {"requests": [library_item(row) for row in users.library(user, limit)]}
    )


@router.post("/archive", summary="Hide a request from the user's library")
def archive_request(body: LibraryRequest, caller: UserCaller, db: DbSession) -> dict[str, Any]:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, body.external_user)
    return with_summary(
        users.facts(user), {"request": library_item(users.archive(user, body.request_id))}
    )


@router.post("/publish", summary="Publish a request of the user's library")
def publish_request(body: PublishRequest, caller: UserCaller, db: DbSession) -> dict[str, Any]:
    users = ExternalUserService(db)
    _, user = users.resolve(caller, body.external_user)
    row = users.publish(
        user, body.request_id, title=body.title, description=body.description, tags=body.tags
    )
    return with_summary(
        users.facts(user), {"request": library_item(row), "publication": publication(row)}
    )


# Login tokens


@router.post("/create_login_token", summary="A login token (and loginUrl) for the user")
def user_login_token(
    caller: UserCaller,
    db: DbSession,
    settings: AppSettings,
    request: Request,
    body: LoginTokenRequest | None = None,
) -> dict[str, Any]:
    body = body or LoginTokenRequest()
    users = ExternalUserService(db)
    acting, user = users.resolve(caller, body.external_user)
    ttl = timedelta(seconds=settings.login_token_ttl_seconds)
    issued = TokenService(db).create_login_token(acting, ttl, body.redirect)
    return with_summary(
        users.facts(user), login_token_answer(issued, str(request.base_url), settings)
    )


@root_router.get("/users/verify_token", summary="Exchange a login token, or verify an auth token")
def verify_token(
    request: Request,
    database: AppDatabase,
    settings: AppSettings,
    login_token: str | None = Query(default=None, alias="loginToken", max_length=200),
    auth_token: str | None = Query(default=None, alias="authToken", max_length=200),
) -> dict[str, Any]:
    if login_token is not None:
        ttl = timedelta(seconds=settings.auth_token_ttl_seconds)
        exchanged = exchange_login_token(database, login_token, ttl)
        assert exchanged.expires_at is not None
        return {
            **verified(exchanged.facts),
            "authToken": exchanged.auth_token,
            "expiresAt": exchanged.expires_at.isoformat(),
        }
    auth_token = auth_token or bearer_of(request.headers)
    if auth_token is None:
        raise Unauthorized("Send loginToken or authToken.", code="missing_token")
    checked = verify_auth_token(database, auth_token)
    answer = verified(checked.facts)
    if checked.expires_at is not None:
        answer["expiresAt"] = checked.expires_at.isoformat()
    return answer
