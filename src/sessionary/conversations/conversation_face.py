"""The Conversations API face of sessions (OpenAI's successor of Threads).

A conversation is a session: its id is the session's id, whatever face created it, so a
conversation can be continued through `/assistant/completion`, read as a thread or a ChatKit
thread, and passed to `/responses` as `conversation`. Its items are the session's messages.
Another owner's conversation is answered 404, as a missing one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.conversations.items import parse_items
from sessionary.conversations.models import ConversationMessage, ConversationSession
from sessionary.conversations.service import ConversationService, check_id
from sessionary.kit.errors import NotFound
from sessionary.kit.metadata import check_metadata, dump
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams


class ConversationFace:
    def __init__(self, db: Session) -> None:
        self.conversations = ConversationService(db)
        self.store = self.conversations.store

    def create(self, caller: Principal, items: Any, metadata: Any) -> ConversationSession:
        """A new session holding the initial items; all valid or nothing stored."""
        checked = check_metadata(metadata)
        messages = parse_items(items) if items is not None else []
        conversation = self.conversations.create_session(
            caller, kind="conversation", metadata=checked
        )
        self.conversations.append(conversation, messages)
        return conversation

    def get(self, caller: Principal, conversation_id: str) -> ConversationSession:
        return self.conversations.visible_session(
            caller, conversation_id, "conversation_id", "conversation"
        )

    def update(self, caller: Principal, conversation_id: str, metadata: Any) -> ConversationSession:
        """Metadata replaced as a whole (null clears it), as OpenAI's update does."""
        conversation = self.get(caller, conversation_id)
        conversation.metadata_json = dump(check_metadata(metadata))
        conversation.updated_at = utcnow()
        return conversation

    def delete(self, caller: Principal, conversation_id: str) -> str:
        """Gone from every face at once (a thread, a ChatKit thread of the same session)."""
        conversation = self.get(caller, conversation_id)
        self.conversations.soft_delete(conversation)
        return conversation.id

    def add_items(
        self, caller: Principal, conversation_id: str, items: Any
    ) -> list[ConversationMessage]:
        conversation = self.get(caller, conversation_id)
        return self.conversations.append(conversation, parse_items(items))

    def items(
        self, caller: Principal, conversation_id: str, page: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        conversation = self.get(caller, conversation_id)
        return self.conversations.page_messages(conversation, page)

    def item(self, caller: Principal, conversation_id: str, item_id: str) -> ConversationMessage:
        conversation = self.get(caller, conversation_id)
        row = self.store.get_message(conversation.id, check_id(item_id, "item_id"))
        if row is None:
            raise NotFound(
                f"No item '{item_id}' in conversation '{conversation_id}'.", param="item_id"
            )
        return row

    def delete_item(
        self, caller: Principal, conversation_id: str, item_id: str
    ) -> ConversationSession:
        """The item leaves the conversation (and the history of its next turns)."""
        row = self.item(caller, conversation_id, item_id)
        self.store.delete_message(row.id)
        conversation = self.get(caller, conversation_id)
        conversation.updated_at = utcnow()
        return conversation
