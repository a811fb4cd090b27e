"""Stored chat completions: what `store: true` keeps, and who may read, relabel or delete it.

A stored completion is its answer as sent (the chat.completion object) and its conversation,
recorded on a session of its own (readable as a thread too). Only its owner reaches it: the
account that made it (and that account for its external users' ones) or the external user that
made it; anyone else gets 404, as OpenAI answers for a completion that is not the caller's.
Deleting it deletes its session; deleting that session (as a thread) deletes it too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.conversations.models import (
    ConversationMessage,
    ConversationSession,
    StoredCompletion,
)
from sessionary.conversations.service import ConversationService, NewMessage, check_id
from sessionary.conversations.store import ConversationStore
from sessionary.kit.errors import NotFound
from sessionary.kit.metadata import check_metadata, dump, load
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

SESSION_KIND = "chat_completion"


def stored_completion_object(row: StoredCompletion) -> dict[str, Any]:
    """The completion as answered, with its metadata as it stands now."""
    payload: dict[str, Any] = json.loads(row.payload_json)
    return {**payload, "metadata": load(row.metadata_json) or {}}


class CompletionService:
    def __init__(self, db: Session) -> None:
        self.db = db
        self.store = ConversationStore(db)

    def record(
        self,
        caller: Principal,
        payload: dict[str, Any],
        *,
        session_id: str,
        metadata: dict[str, str] | None,
        inputs: Sequence[NewMessage],
        replies: Sequence[NewMessage],
    ) -> ConversationSession:
        """The conversation on a new session, and the completion over it."""
        conversations = ConversationService(self.db)
        conversation = conversations.create_session(
            caller, kind=SESSION_KIND, metadata=metadata, session_id=session_id
        )
        completion_id = str(payload["id"])
        input_ids = conversations.record_turn(conversation, completion_id, inputs, replies)
        self.store.add_completion(
            StoredCompletion(
                id=completion_id,
                session_id=conversation.id,
                account_id=caller.account_id,
                external_user_id=caller.external_user_id,
                model=str(payload["model"]),
                metadata_json=dump(metadata),
                payload_json=json.dumps(payload),
                input_message_ids=json.dumps(input_ids),
                created_at=utcnow(),
            )
        )
        self.store.set_completion_tags(completion_id, metadata or {})
        return conversation

    def owned(self, caller: Principal, completion_id: str) -> StoredCompletion:
        row = self.store.reachable_completion(caller, check_id(completion_id, "completion_id"))
        if row is None:
            raise NotFound(f"No stored chat completion '{completion_id}'.", param="completion_id")
        return row

    def list_completions(
        self,
        caller: Principal,
        page: PageParams,
        *,
        model: str | None,
        metadata: dict[str, str],
    ) -> tuple[list[StoredCompletion], bool]:
        """The caller's own stored completions (an account's list leaves out its users')."""
        return self.store.page_completions(caller, page, model=model, metadata=metadata)

    def messages(
        self, caller: Principal, completion_id: str, page: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        """The messages the completion was asked with, as the client sent them."""
        row = self.owned(caller, completion_id)
        ids = json.loads(row.input_message_ids)
        return self.store.page_messages_among(row.session_id, ids, page)

    def update(self, caller: Principal, completion_id: str, metadata: Any) -> StoredCompletion:
        """Replace the completion's metadata (null clears it), as OpenAI's update does."""
        checked = check_metadata(metadata)
        row = self.owned(caller, completion_id)
        row.metadata_json = dump(checked)
        self.store.set_completion_tags(row.id, checked or {})
        return row

    def delete(self, caller: Principal, completion_id: str) -> None:
        row = self.owned(caller, completion_id)
        conversation = self.store.get_session(row.session_id)
        self.store.delete_completion(row.id)
        if conversation is not None:
            self.store.soft_delete(conversation)
