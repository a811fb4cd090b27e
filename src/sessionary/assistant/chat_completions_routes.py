"""OpenAI's chat completions API over the same providers, keys and ledger as every turn, and
the completions kept with `store: true`: retrieve, list, relabel, delete, and their messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from sessionary.accounts.principal import SessionCaller, UserCaller
from sessionary.assistant.answers import turn_response
from sessionary.assistant.chat_schemas import ChatCompletionRequest, ChatCompletionUpdate
from sessionary.assistant.dependencies import AppChatCompletions
from sessionary.conversations.completions import CompletionService, stored_completion_object
from sessionary.conversations.faces import chat_message_object
from sessionary.kit.dependencies import DbSession
from sessionary.kit.ids import ObjectId
from sessionary.kit.metadata import metadata_filter
from sessionary.kit.pagination import AscendingPage, envelope

router = APIRouter(tags=["chat completions"])


@router.post("/chat/completions", summary="Create a chat completion (OpenAI chat completions)")
async def create_chat_completion(
    body: ChatCompletionRequest, caller: SessionCaller, completions: AppChatCompletions
) -> Response:
    return turn_response(await completions.complete(caller, body))


@router.get("/chat/completions", summary="List stored chat completions")
def list_chat_completions(
    request: Request,
    caller: UserCaller,
    db: DbSession,
    page: AscendingPage,
    model: str | None = Query(default=None, max_length=200),
) -> dict[str, Any]:
    """Filter by `model` and by `metadata[key]=value` pairs (every pair must match)."""
    metadata = metadata_filter(request.query_params.multi_items())
    rows, has_more = CompletionService(db).list_completions(
        caller, page, model=model, metadata=metadata
    )
    return envelope([stored_completion_object(r) for r in rows], has_more)


@router.get("/chat/completions/{completion_id}", summary="Retrieve a stored chat completion")
def retrieve_chat_completion(
    completion_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    return stored_completion_object(CompletionService(db).owned(caller, completion_id))


@router.post(
    "/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata"
)
def update_chat_completion(
    completion_id: ObjectId, body: ChatCompletionUpdate, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    row = CompletionService(db).update(caller, completion_id, body.metadata)
    return stored_completion_object(row)


@router.delete("/chat/completions/{completion_id}", summary="Delete a stored chat completion")
def delete_chat_completion(
    completion_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    CompletionService(db).delete(caller, completion_id)
    return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}


@router.get(
    "/chat/completions/{completion_id}/messages",
    summary="The messages a stored chat completion was asked with",
)
def list_chat_completion_messages(
    completion_id: ObjectId, caller: UserCaller, db: DbSession, page: AscendingPage
) -> dict[str, Any]:
    rows, has_more = CompletionService(db).messages(caller, completion_id, page)
    return envelope([chat_message_object(r) for r in rows], has_more)
