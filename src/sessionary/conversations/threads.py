"""Threads and their messages: the OpenAI Assistants face of sessions.

A thread is a session; a message added here is history for the session's next turn, and the
turns made elsewhere (`/assistant/completion`, `/responses`) show up as its messages.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.conversations.models import ConversationMessage, ConversationSession
from sessionary.conversations.service import ConversationService, check_id
from sessionary.kit.errors import InvalidRequest, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import check_metadata, dump
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

MAX_INITIAL_MESSAGES = 32
MAX_ATTACHMENTS = 10


def message_parts(content: Any, role: str, param: str) -> tuple[list[dict[str, Any]], str]:
    """Thread message content (a string, or text / image_url / image_file parts) as stored parts."""
    text_kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        if not content:
            raise InvalidRequest("Message content must not be empty.", param=param)
        return [{"type": text_kind, "text": content}], content
    if not isinstance(content, list) or not content:
        raise InvalidRequest("Message content must be a string or a list of parts.", param=param)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": text_kind, "text": part["text"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            url = part["image_url"].get("url")
            if not isinstance(url, str) or not url.startswith(
                ("https://", "http://", "data:image/")
            ):
                raise InvalidRequest("image_url.url must be an http(s) or data URL.", param=where)
            parts.append(
                {
                    "type": "input_image",
                    "image_url": url,
                    "detail": part["image_url"].get("detail", "auto"),
                }
            )
        elif kind == "image_file" and isinstance(part.get("image_file"), dict):
            file_id = part["image_file"].get("file_id")
            if not isinstance(file_id, str) or not file_id:
                raise InvalidRequest("image_file.file_id is required.", param=where)
            parts.append(
                {
                    "type": "image_file",
                    "file_id": file_id,
                    "detail": part["image_file"].get("detail", "auto"),
                }
            )
        else:
            raise InvalidRequest(
                "Content parts are text, image_url or image_file objects.", param=where
            )
    text = "\n".join(p["text"] for p in parts if "text" in p)
    return parts, text


def check_attachments(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        raise InvalidRequest(
            f"attachments is a list of at most {MAX_ATTACHMENTS}.", param="attachments"
        )
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
            raise InvalidRequest("Each attachment needs a 'file_id'.", param="attachments")
    return value


class ThreadService:
    def __init__(self, db: Session) -> None:
        self.conversations = ConversationService(db)
        self.store = self.conversations.store

    def create(
        self, caller: Principal, messages: list[dict[str, Any]] | None, metadata: Any
    ) -> ConversationSession:
        if messages is not None and len(messages) > MAX_INITIAL_MESSAGES:
            raise InvalidRequest(
                f"A thread starts with at most {MAX_INITIAL_MESSAGES} messages.", param="messages"
            )
        thread = self.conversations.create_session(
            caller, kind="thread", metadata=check_metadata(metadata)
        )
        for index, message in enumerate(messages or []):
            if not isinstance(message, dict):
                raise InvalidRequest("Each message must be an object.", param=f"messages[{index}]")
            self.add_message(
                thread,
                role=message.get("role"),
                content=message.get("content"),
                attachments=message.get("attachments"),
                metadata=message.get("metadata"),
                param=f"messages[{index}]",
            )
        return thread

    def get(self, caller: Principal, thread_id: str) -> ConversationSession:
        return self.conversations.owned_session(caller, thread_id, "thread_id")

    def update(self, caller: Principal, thread_id: str, metadata: Any) -> ConversationSession:
        thread = self.get(caller, thread_id)
        if metadata is not None:
            thread.metadata_json = dump(check_metadata(metadata))
            thread.updated_at = utcnow()
        return thread

    def delete(self, caller: Principal, thread_id: str) -> str:
        thread = self.get(caller, thread_id)
        self.conversations.soft_delete(thread)
        return thread.id

    def add_message(
        self,
        thread: ConversationSession,
        *,
        role: Any,
        content: Any,
        attachments: Any = None,
        metadata: Any = None,
        param: str = "",
    ) -> ConversationMessage:
        prefix = f"{param}." if param else ""
        if role not in ("user", "assistant"):
            raise InvalidRequest("role must be 'user' or 'assistant'.", param=f"{prefix}role")
        parts, text = message_parts(content, role, f"{prefix}content")
        row = ConversationMessage(
            id=new_id("msg"),
            session_id=thread.id,
            role=role,
            content_json=json.dumps(parts),
            text=text,
            status="completed",
            metadata_json=dump(check_metadata(metadata, f"{prefix}metadata")),
            attachments_json=dump(check_attachments(attachments)),
            created_at=utcnow(),
        )
        self.store.add_messages(thread, [row])
        thread.updated_at = row.created_at
        return row

    def message(self, caller: Principal, thread_id: str, message_id: str) -> ConversationMessage:
        thread = self.get(caller, thread_id)
        row = self.store.get_message(thread.id, check_id(message_id, "message_id"))
        if row is None:
            raise NotFound(
                f"No message '{message_id}' in thread '{thread_id}'.", param="message_id"
            )
        return row

    def update_message(
        self, caller: Principal, thread_id: str, message_id: str, metadata: Any
    ) -> ConversationMessage:
        row = self.message(caller, thread_id, message_id)
        if metadata is not None:
            row.metadata_json = dump(check_metadata(metadata))
        return row

    def delete_message(self, caller: Principal, thread_id: str, message_id: str) -> str:
        row = self.message(caller, thread_id, message_id)
        self.store.delete_message(row.id)
        return row.id

    def list_messages(
        self,
        caller: Principal,
        thread_id: str,
        page: PageParams,
        *,
        run_id: str | None,
    ) -> tuple[list[ConversationMessage], bool]:
        thread = self.get(caller, thread_id)
        return self.store.page_messages(thread.id, page, run_id=run_id)
