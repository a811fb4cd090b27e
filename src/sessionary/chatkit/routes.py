"""`/v1/chatkit/sessions` and `/v1/chatkit/threads`: the ChatKit face of sessions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sessionary.accounts.principal import Caller, SessionCaller
from sessionary.chatkit.service import ChatKitService, SessionCreate, session_object
from sessionary.conversations.faces import chatkit_item, chatkit_thread
from sessionary.conversations.service import ConversationService
from sessionary.kit.dependencies import DbSession
from sessionary.kit.errors import NotFound
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["chatkit"])


@router.post("/chatkit/sessions", summary="Create a ChatKit session and its client secret")
def create_session(body: SessionCreate, caller: Caller, session: DbSession) -> dict[str, Any]:
    row, secret = ChatKitService(session).create(caller, body)
    return session_object(row, secret)


@router.post("/chatkit/sessions/{session_id}/cancel", summary="Cancel a ChatKit session")
def cancel_session(session_id: ObjectId, caller: Caller, session: DbSession) -> dict[str, Any]:
    return session_object(ChatKitService(session).cancel(caller, session_id))


@router.get("/chatkit/threads", summary="List ChatKit threads")
def list_threads(
    caller: Caller, session: DbSession, page: Page, user: str | None = None
) -> dict[str, Any]:
    chatkit = ChatKitService(session)
    users = {row.id: row.user for row in chatkit.store.of_account(caller.account_id, user)}
    rows = ConversationService(session).store.sessions_of(
        caller.account_id,
        "chatkit",
        session_ids=list(users),
        **page.model_dump(),
    )
    data = [chatkit_thread(r, users[r.id]) for r in rows[: page.limit]]
    return envelope(data, len(rows) > page.limit)


def _thread(caller: Any, session: DbSession, thread_id: ObjectId) -> tuple[Any, str]:
    row = ConversationService(session).owned_session(caller, thread_id, "thread_id")
    chatkit = ChatKitService(session).store.get(row.id)
    if chatkit is None:
        raise NotFound(f"No ChatKit thread '{thread_id}'.", param="thread_id")
    return row, chatkit.user


@router.get("/chatkit/threads/{thread_id}", summary="Retrieve a ChatKit thread")
def get_thread(thread_id: ObjectId, caller: SessionCaller, session: DbSession) -> dict[str, Any]:
    row, user = _thread(caller, session, thread_id)
    return chatkit_thread(row, user)


@router.delete("/chatkit/threads/{thread_id}", summary="Delete a ChatKit thread")
def delete_thread(thread_id: ObjectId, caller: Caller, session: DbSession) -> dict[str, Any]:
    row, _ = _thread(caller, session, thread_id)
    ConversationService(session).soft_delete(row)
    return {"id": row.id, "object": "chatkit.thread.deleted", "deleted": True}


@router.get("/chatkit/threads/{thread_id}/items", summary="List a ChatKit thread's items")
def list_items(
    thread_id: ObjectId, caller: SessionCaller, session: DbSession, page: Page
) -> dict[str, Any]:
    row, _ = _thread(caller, session, thread_id)
    messages = ConversationService(session).store.page_messages(row.id, **page.model_dump())
    return envelope([chatkit_item(m) for m in messages[: page.limit]], len(messages) > page.limit)
