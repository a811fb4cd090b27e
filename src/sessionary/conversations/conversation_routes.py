"""`/v1/conversations` and its items: OpenAI's Conversations API face of sessions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from sessionary.accounts.principal import UserCaller
from sessionary.conversations.conversation_face import ConversationFace
from sessionary.conversations.faces import unix
from sessionary.conversations.items import check_include, item_object
from sessionary.conversations.models import ConversationSession
from sessionary.conversations.schemas import ConversationCreate, ConversationUpdate, ItemsCreate
from sessionary.kit.dependencies import DbSession
from sessionary.kit.ids import ObjectId
from sessionary.kit.metadata import load
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["conversations"])

# `include` as the SDK sends it: repeated `include=` query parameters.
Include = Annotated[list[str] | None, Query()]


def conversation_object(conversation: ConversationSession) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": unix(conversation.created_at),
        "metadata": load(conversation.metadata_json) or {},
    }


@router.post("/conversations", summary="Create a conversation (a session), with initial items")
def create_conversation(
    caller: UserCaller, db: DbSession, body: ConversationCreate | None = None
) -> dict[str, Any]:
    body = body or ConversationCreate()
    return conversation_object(ConversationFace(db).create(caller, body.items, body.metadata))


@router.get("/conversations/{conversation_id}", summary="Retrieve a conversation")
def get_conversation(
    conversation_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    return conversation_object(ConversationFace(db).get(caller, conversation_id))


@router.post("/conversations/{conversation_id}", summary="Update a conversation's metadata")
def update_conversation(
    conversation_id: ObjectId, body: ConversationUpdate, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    face = ConversationFace(db)
    return conversation_object(face.update(caller, conversation_id, body.metadata))


@router.delete("/conversations/{conversation_id}", summary="Delete a conversation")
def delete_conversation(
    conversation_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    deleted = ConversationFace(db).delete(caller, conversation_id)
    return {"id": deleted, "object": "conversation.deleted", "deleted": True}


@router.post("/conversations/{conversation_id}/items", summary="Add items to a conversation")
def create_items(
    conversation_id: ObjectId,
    body: ItemsCreate,
    caller: UserCaller,
    db: DbSession,
    include: Include = None,
) -> dict[str, Any]:
    check_include(include)
    rows = ConversationFace(db).add_items(caller, conversation_id, body.items)
    return envelope([item_object(r) for r in rows], False)


@router.get("/conversations/{conversation_id}/items", summary="List a conversation's items")
def list_items(
    conversation_id: ObjectId,
    caller: UserCaller,
    db: DbSession,
    page: Page,
    include: Include = None,
) -> dict[str, Any]:
    check_include(include)
    rows, has_more = ConversationFace(db).items(caller, conversation_id, page)
    return envelope([item_object(r) for r in rows], has_more)


@router.get("/conversations/{conversation_id}/items/{item_id}", summary="Retrieve an item")
def get_item(
    conversation_id: ObjectId,
    item_id: ObjectId,
    caller: UserCaller,
    db: DbSession,
    include: Include = None,
) -> dict[str, Any]:
    check_include(include)
    return item_object(ConversationFace(db).item(caller, conversation_id, item_id))


@router.delete(
    "/conversations/{conversation_id}/items/{item_id}",
    summary="Delete an item; answers the conversation",
)
def delete_item(
    conversation_id: ObjectId, item_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    return conversation_object(ConversationFace(db).delete_item(caller, conversation_id, item_id))
