"""OpenAI's Responses API over the same sessions: create, retrieve, delete, input items."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response

from sessionary.accounts.principal import SessionCaller, UserCaller
from sessionary.assistant.answers import turn_response
from sessionary.assistant.dependencies import AppAssistant
from sessionary.assistant.schemas import ResponsesRequest
from sessionary.conversations.faces import response_item
from sessionary.conversations.service import ConversationService, check_id
from sessionary.kit.dependencies import DbSession
from sessionary.kit.errors import InvalidRequest
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["responses"])


def _conversation_id(value: str | dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    raw = value.get("id") if isinstance(value, dict) else value
    return check_id(raw, "conversation")


@router.post("/responses", summary="Create a model response (OpenAI Responses API)")
async def create_response(
    body: ResponsesRequest, caller: SessionCaller, assistant: AppAssistant
) -> Response:
    conversation = _conversation_id(body.conversation)
    if conversation is not None and body.previous_response_id is not None:
        raise InvalidRequest(
            "Use either 'conversation' or 'previous_response_id', not both.",
            param="conversation",
        )
    outcome = await assistant.answer(
        caller,
        body,
        route="/v1/responses",
        session_id=conversation,
        session_kind="response",
        default_truncation="disabled",
    )
    return turn_response(outcome)


@router.get("/responses/{response_id}", summary="Retrieve a stored response")
def retrieve_response(
    response_id: ObjectId, caller: SessionCaller, db: DbSession
) -> dict[str, Any]:
    row = ConversationService(db).owned_response(caller, response_id)
    payload: dict[str, Any] = json.loads(row.payload_json)
    return payload


@router.delete("/responses/{response_id}", summary="Delete a stored response")
def delete_response(response_id: ObjectId, caller: UserCaller, db: DbSession) -> dict[str, Any]:
    ConversationService(db).delete_response(caller, response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items", summary="The input items of a response")
def input_items(
    response_id: ObjectId, caller: SessionCaller, db: DbSession, page: Page
) -> dict[str, Any]:
    conversations = ConversationService(db)
    row = conversations.owned_response(caller, response_id)
    chosen, has_more = conversations.input_messages(row, page)
    data = [response_item(m) for m in chosen]
    return envelope(data, has_more)
