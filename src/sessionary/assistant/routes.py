"""Samsar's assistant routes: sessions, the account prompt, completions, enhance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from sessionary.accounts.principal import Caller, SessionCaller, UserCaller
from sessionary.assistant.answers import turn_response
from sessionary.assistant.dependencies import AppAssistant
from sessionary.assistant.payloads import session_object
from sessionary.assistant.schemas import (
    CompletionRequest,
    EnhanceRequest,
    NewSessionRequest,
    SystemPromptRequest,
)
from sessionary.billing.headers import credit_headers
from sessionary.conversations.service import ConversationService, check_id
from sessionary.kit.dependencies import DbSession
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.json_answer import JSONAnswer
from sessionary.kit.metadata import check_metadata

router = APIRouter(tags=["assistant"])


@router.post("/assistant/session", summary="Create a blank assistant session")
def create_session(
    caller: UserCaller, db: DbSession, body: NewSessionRequest | None = None
) -> dict[str, Any]:
    body = body or NewSessionRequest()
    row = ConversationService(db).create_session(
        caller,
        kind="assistant",
        name=body.session_name,
        metadata=check_metadata(body.metadata),
    )
    return session_object(row)


@router.post("/assistant/set_system_prompt", summary="Store or clear the account's system prompt")
def set_system_prompt(
    body: SystemPromptRequest, caller: Caller, db: DbSession, assistant: AppAssistant
) -> dict[str, Any]:
    account, model = assistant.set_account_prompt(db, caller, body.system_prompt, body.model)
    return {
        "system_prompt": account.system_prompt,
        "model": model,
        "selected_assistant_model": model,
    }


@router.post("/assistant/completion", summary="An assistant turn on a session (Responses payload)")
async def completion(
    body: CompletionRequest, caller: SessionCaller, assistant: AppAssistant
) -> Response:
    if body.session_id is None:
        raise InvalidRequest("Missing required parameter: 'session_id'.", param="session_id")
    outcome = await assistant.answer(
        caller,
        body,
        route="/v1/assistant/completion",
        session_id=check_id(body.session_id, "session_id"),
        session_kind="assistant",
        default_truncation="auto",
    )
    return turn_response(outcome)


@router.post("/chat/enhance", summary="Rewrite a message keeping its intent (20 credits)")
async def enhance_message(
    body: EnhanceRequest, caller: UserCaller, assistant: AppAssistant
) -> JSONAnswer:
    content, settlement = await assistant.enhance(caller, body)
    return JSONAnswer({"content": content}, headers=credit_headers(settlement))
