"""`/v1/chatkit/sessions` and `/v1/chatkit/threads`: the ChatKit face of sessions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from sessionary.accounts.principal import Caller, SessionCaller
from sessionary.chatkit.payloads import session_object
from sessionary.chatkit.schemas import SessionCreate
from sessionary.chatkit.service import ChatKitService
from sessionary.conversations.faces import chatkit_items, chatkit_thread
from sessionary.kit.dependencies import DbSession
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["chatkit"])


@router.post("/chatkit/sessions", summary="Create a ChatKit session and its client secret")
def create_session(body: SessionCreate, caller: Caller, db: DbSession) -> dict[str, Any]:
    row, secret = ChatKitService(db).create(caller, body)
    return session_object(row, secret)


@router.get("/chatkit/sessions", summary="List the account's ChatKit sessions")
def list_sessions(
    caller: Caller, db: DbSession, page: Page, user: str | None = Query(None, max_length=512)
) -> dict[str, Any]:
    rows, has_more = ChatKitService(db).sessions(caller, page, user)
    return envelope([session_object(r) for r in rows], has_more)


@router.post("/chatkit/sessions/{session_id}/cancel", summary="Cancel a ChatKit session")
def cancel_session(session_id: ObjectId, caller: Caller, db: DbSession) -> dict[str, Any]:
    return session_object(ChatKitService(db).cancel(caller, session_id))


@router.get("/chatkit/threads", summary="List ChatKit threads")
def list_threads(
    caller: SessionCaller, db: DbSession, page: Page, user: str | None = None
) -> dict[str, Any]:
    threads, has_more = ChatKitService(db).threads(caller, user, page)
    return envelope([chatkit_thread(row, owner) for row, owner in threads], has_more)


@router.get("/chatkit/threads/{thread_id}", summary="Retrieve a ChatKit thread")
def get_thread(thread_id: ObjectId, caller: SessionCaller, db: DbSession) -> dict[str, Any]:
    row, user = ChatKitService(db).thread(caller, thread_id)
    return chatkit_thread(row, user)


@router.delete("/chatkit/threads/{thread_id}", summary="Delete a ChatKit thread")
def delete_thread(thread_id: ObjectId, caller: Caller, db: DbSession) -> dict[str, Any]:
    row = ChatKitService(db).delete_thread(caller, thread_id)
    return {"id": row.id, "object": "chatkit.thread.deleted", "deleted": True}


@router.get("/chatkit/threads/{thread_id}/items", summary="List a ChatKit thread's items")
def list_items(
    thread_id: ObjectId, caller: SessionCaller, db: DbSession, page: Page
) -> dict[str, Any]:
    messages, has_more = ChatKitService(db).items(caller, thread_id, page)
    return envelope(chatkit_items(messages), has_more)
