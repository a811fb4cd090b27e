"""Samsar's assistant routes: sessions, the account prompt, completions, enhance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from sessionary.accounts.identity import Principal
from sessionary.accounts.principal import Caller, SessionCaller, UserCaller
from sessionary.accounts.service import AccountService
from sessionary.assistant.dependencies import Turns
from sessionary.assistant.enhance import enhance, enhance_request
from sessionary.assistant.schemas import (
    CompletionRequest,
    EnhanceRequest,
    NewSessionRequest,
    SystemPromptRequest,
    TurnRequest,
)
from sessionary.assistant.streaming import stream_turn
from sessionary.assistant.turns import TurnService
from sessionary.billing.headers import REMAINING, RESERVED, credit_headers
from sessionary.billing.ledger import Owner
from sessionary.billing.metering import balance_of, release, reserve, settle
from sessionary.billing.money import format_credits
from sessionary.conversations.models import ConversationSession
from sessionary.conversations.service import ConversationService, check_id
from sessionary.kit.dependencies import AppSettings, DbSession
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.http import TimedStreamingResponse
from sessionary.kit.metadata import check_metadata, load
from sessionary.kit.request_context import current_request_id

router = APIRouter(tags=["assistant"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/assistant/session", summary="Create a blank assistant session")
def create_session(
    caller: UserCaller, session: DbSession, body: NewSessionRequest | None = None
) -> dict[str, Any]:
    body = body or NewSessionRequest()
    row = ConversationService(session).create_session(
        caller,
        kind="assistant",
        name=body.session_name,
        metadata=check_metadata(body.metadata),
    )
    return session_answer(row)


def session_answer(row: ConversationSession) -> dict[str, Any]:
    return {
        "session_id": row.id,
        "request_id": current_request_id(),
        "session_type": row.kind,
        "session_name": row.name,
        "metadata": load(row.metadata_json) or {},
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.post("/assistant/set_system_prompt", summary="Store or clear the account's system prompt")
def set_system_prompt(
    body: SystemPromptRequest, caller: Caller, session: DbSession, turns: Turns
) -> dict[str, Any]:
    chat = turns.providers.chat()
    chosen = turns.providers.resolve_chat_model(body.model) if body.model else None
    account = AccountService(session).set_assistant(
        caller.account_id, system_prompt=body.system_prompt, model=chosen
    )
    model = chat.name
    return {
        "system_prompt": account.system_prompt,
        "model": model,
        "selected_assistant_model": model,
    }


async def answer_turn(
    turns: TurnService,
    caller: Principal,
    request: TurnRequest,
    *,
    route: str,
    session_id: str | None,
    session_kind: str,
    default_truncation: str,
    default_max_output_tokens: int,
) -> Response:
    """Plan, fit and reserve (errors here are plain JSON answers), then answer or stream."""
    turn = await turns.plan(
        caller,
        request,
        route=route,
        session_id=session_id,
        session_kind=session_kind,
        default_truncation=default_truncation,
    )
    await turns.fit(turn, default_max_output_tokens)
    meter = await turns.reserve(turn)
    if not request.stream:
        payload, settlement = await turns.run(turn, meter)
        return JSONResponse(payload, headers=credit_headers(settlement))
    try:
        remaining = await balance_of(turns.db, turn.owner)
    except BaseException:
        await release(meter)
        raise
    # The charge is known only at the end: the final event's response carries `credits`.
    headers = {
        **SSE_HEADERS,
        RESERVED: format_credits(meter.reservation.amount_micro),
        REMAINING: format_credits(remaining),
    }
    return TimedStreamingResponse(
        stream_turn(turns, turn, meter),
        media_type="text/event-stream",
        headers=headers,
        write_timeout=turns.db.settings.stream_write_timeout_seconds,
    )


@router.post("/assistant/completion", summary="An assistant turn on a session (Responses payload)")
async def completion(
    body: CompletionRequest, caller: SessionCaller, turns: Turns, settings: AppSettings
) -> Response:
    if body.session_id is None:
        raise InvalidRequest("Missing required parameter: 'session_id'.", param="session_id")
    session_id = check_id(body.session_id, "session_id")
    return await answer_turn(
        turns,
        caller,
        body,
        route="/v1/assistant/completion",
        session_id=session_id,
        session_kind="assistant",
        default_truncation="auto",
        default_max_output_tokens=settings.default_max_output_tokens,
    )


@router.post("/chat/enhance", summary="Rewrite a message keeping its intent (20 credits)")
async def enhance_message(body: EnhanceRequest, caller: UserCaller, turns: Turns) -> JSONResponse:
    request, max_words = enhance_request(body.message, body.language, body.maxwords, body.metadata)
    chat = turns.providers.chat()
    price = turns.pricing.enhance()
    meter = await reserve(turns.db, Owner.of(caller), price, route="/v1/chat/enhance")
    try:
        content = await enhance(chat, request, max_words)
        settlement = await settle(meter, price, model=chat.name, usage={"requests": 1})
    except BaseException:
        await release(meter)
        raise
    return JSONResponse({"content": content}, headers=credit_headers(settlement))
