"""`/v1/threads` and `/v1/threads/{id}/messages`: OpenAI's Assistants face of sessions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sessionary.accounts.principal import UserCaller
from sessionary.conversations.faces import message_object, session_object, thread_object
from sessionary.conversations.schemas import (
    MessageCreate,
    MessageUpdate,
    ThreadCreate,
    ThreadUpdate,
)
from sessionary.conversations.service import ConversationService
from sessionary.conversations.threads import ThreadService
from sessionary.kit.dependencies import DbSession
from sessionary.kit.ids import ObjectId
from sessionary.kit.pagination import Page, envelope

router = APIRouter(tags=["threads"])


@router.get("/sessions", summary="List the caller's sessions (every face: assistant, thread, ...)")
def list_sessions(caller: UserCaller, db: DbSession, page: Page) -> dict[str, Any]:
    rows, has_more = ConversationService(db).list_sessions(caller, page)
    return envelope([session_object(r) for r in rows], has_more)


@router.post("/threads", summary="Create a thread (a session)")
def create_thread(
    caller: UserCaller, db: DbSession, body: ThreadCreate | None = None
) -> dict[str, Any]:
    body = body or ThreadCreate()
    return thread_object(ThreadService(db).create(caller, body.messages, body.metadata))


@router.get("/threads/{thread_id}", summary="Retrieve a thread")
def get_thread(thread_id: ObjectId, caller: UserCaller, db: DbSession) -> dict[str, Any]:
    return thread_object(ThreadService(db).get(caller, thread_id))


@router.post("/threads/{thread_id}", summary="Update a thread's metadata")
def update_thread(
    thread_id: ObjectId, body: ThreadUpdate, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    return thread_object(ThreadService(db).update(caller, thread_id, body.metadata))


@router.delete("/threads/{thread_id}", summary="Delete a thread")
def delete_thread(thread_id: ObjectId, caller: UserCaller, db: DbSession) -> dict[str, Any]:
    deleted = ThreadService(db).delete(caller, thread_id)
    return {"id": deleted, "object": "thread.deleted", "deleted": True}


@router.post("/threads/{thread_id}/messages", summary="Add a message to a thread")
def create_message(
    thread_id: ObjectId, body: MessageCreate, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    threads = ThreadService(db)
    thread = threads.get(caller, thread_id)
    row = threads.add_message(
        thread,
        role=body.role,
        content=body.content,
        attachments=body.attachments,
        metadata=body.metadata,
    )
    return message_object(row)


@router.get("/threads/{thread_id}/messages", summary="List a thread's messages")
def list_messages(
    thread_id: ObjectId,
    caller: UserCaller,
    db: DbSession,
    page: Page,
    run_id: str | None = None,
) -> dict[str, Any]:
    rows, has_more = ThreadService(db).list_messages(caller, thread_id, page, run_id=run_id)
    return envelope([message_object(r) for r in rows], has_more)


@router.get("/threads/{thread_id}/messages/{message_id}", summary="Retrieve a message")
def get_message(
    thread_id: ObjectId, message_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    return message_object(ThreadService(db).message(caller, thread_id, message_id))


@router.post("/threads/{thread_id}/messages/{message_id}", summary="Update a message's metadata")
def update_message(
    thread_id: ObjectId,
    message_id: ObjectId,
    body: MessageUpdate,
    caller: UserCaller,
    db: DbSession,
) -> dict[str, Any]:
    row = ThreadService(db).update_message(caller, thread_id, message_id, body.metadata)
    return message_object(row)


@router.delete("/threads/{thread_id}/messages/{message_id}", summary="Delete a message")
def delete_message(
    thread_id: ObjectId, message_id: ObjectId, caller: UserCaller, db: DbSession
) -> dict[str, Any]:
    deleted = ThreadService(db).delete_message(caller, thread_id, message_id)
    return {"id": deleted, "object": "thread.message.deleted", "deleted": True}
