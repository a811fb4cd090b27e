"""OpenAI's Responses API over the same sessions: create, retrieve, delete, input items; and
for background responses, cancel and a resumable stream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from sessionary.accounts.principal import SessionCaller, UserCaller
from sessionary.assistant.answers import event_stream, turn_response
from sessionary.assistant.dependencies import AppAssistant, AppBackgroundRuns
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


@router.get("/responses/{response_id}", summary="Retrieve a stored response, or stream it again")
async def retrieve_response(
    response_id: ObjectId,
    caller: SessionCaller,
    runs: AppBackgroundRuns,
    stream: Annotated[
        bool, Query(description="Replay a background response's events, then follow it.")
    ] = False,
    starting_after: Annotated[
        int | None,
        Query(ge=0, le=2**31 - 1, description="With stream: replay the events after this one."),
    ] = None,
) -> Any:
    if stream:
        after = -1 if starting_after is None else starting_after
        return event_stream(await runs.replay_of(caller, response_id, after), runs.write_timeout)
    if starting_after is not None:
        raise InvalidRequest("starting_after applies with stream=true.", param="starting_after")
    return await runs.read(caller, response_id)


@router.post("/responses/{response_id}/cancel", summary="Cancel a background response")
async def cancel_response(
    response_id: ObjectId, caller: SessionCaller, runs: AppBackgroundRuns
) -> dict[str, Any]:
    return await runs.cancel(caller, response_id)


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
