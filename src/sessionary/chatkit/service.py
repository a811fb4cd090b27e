"""Rules for ChatKit sessions: creation from a workflow, client secrets, expiry, rate limits."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import generate_key, key_matches, prefix_of
from sessionary.accounts.tokens import TokenService
from sessionary.chatkit.models import ChatKitSession
from sessionary.chatkit.schemas import RateLimits, SessionCreate
from sessionary.chatkit.store import ChatKitStore
from sessionary.conversations.models import ConversationMessage, ConversationSession
from sessionary.conversations.service import ConversationService
from sessionary.kit.errors import Forbidden, NotFound, RateLimited, Unauthorized
from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams
from sessionary.profiles.service import ProfileService, render_instructions

SECRET_TYPE = "ek_"  # noqa: S105 - the visible type prefix of client secrets, not a secret
WINDOW = timedelta(minutes=1)
DEFAULT_WORKFLOW = "default"


def _configuration(given: dict[str, Any] | None) -> dict[str, Any]:
    given = given or {}
    titling = given.get("automatic_thread_titling") or {}
    upload = given.get("file_upload") or {}
    history = given.get("history") or {}
    return {
        "automatic_thread_titling": {"enabled": bool(titling.get("enabled", True))},
        "file_upload": {
            "enabled": bool(upload.get("enabled", False)),
            "max_file_size": upload.get("max_file_size", 512),
            "max_files": upload.get("max_files", 10),
        },
        "history": {
            "enabled": bool(history.get("enabled", True)),
            "recent_threads": history.get("recent_threads"),
        },
    }


def status_of(row: ChatKitSession) -> str:
    if row.status == "cancelled":
        return "cancelled"
    return "expired" if utcnow() >= row.expires_at else "active"


# The kind of conversation session a ChatKit session is (the only kind with a workflow).
CHATKIT_KIND = "chatkit"


class ChatKitService:
    def __init__(self, db: Session) -> None:
        self.store = ChatKitStore(db)
        self.db = db

    def create(self, caller: Principal, body: SessionCreate) -> tuple[ChatKitSession, str]:
        instructions = model = None
        temperature = None
        if body.workflow.id != DEFAULT_WORKFLOW:
            profile = ProfileService(self.db).find(caller, body.workflow.id)
            if profile is None:
                raise NotFound(f"Workflow '{body.workflow.id}' not found.", param="workflow.id")
            instructions = render_instructions(profile.instructions, body.workflow.state_variables)
            model, temperature = profile.model, profile.temperature
        session_id = new_id("cksess")
        ConversationService(self.db).create_session(
            caller, kind=CHATKIT_KIND, session_id=session_id
        )
        secret = generate_key(SECRET_TYPE)
        now = utcnow()
        seconds = body.expires_after.seconds if body.expires_after else 600
        limit = (body.rate_limits or RateLimits()).max_requests_per_1_minute
        workflow = {
            "id": body.workflow.id,
            "version": body.workflow.version,
            "state_variables": body.workflow.state_variables,
            "tracing": {"enabled": bool((body.workflow.tracing or {}).get("enabled", True))},
        }
        row = self.store.add(
            ChatKitSession(
                id=session_id,
                account_id=caller.account_id,
                user=body.user,
                workflow_json=json.dumps(workflow),
                configuration_json=json.dumps(_configuration(body.chatkit_configuration)),
                instructions=instructions,
                model=model,
                temperature=temperature,
                secret_prefix=secret.prefix,
                secret_hash=secret.key_hash,
                max_requests_per_minute=limit,
                status="active",
                created_at=now,
                expires_at=now + timedelta(seconds=seconds),
                api_key_id=caller.api_key_id,
                token_id=caller.token_id,
            )
        )
        return row, secret.plaintext

    def owned(self, caller: Principal, session_id: str) -> ChatKitSession:
        row = self.store.get(session_id)
        if row is None:
            raise NotFound(f"No ChatKit session '{session_id}'.", param="session_id")
        if row.account_id != caller.account_id:
            raise Forbidden("This ChatKit session belongs to another account.", param="session_id")
        return row

    def find(self, session_id: str) -> ChatKitSession | None:
        """The ChatKit session of a conversation, with the workflow it runs (None: not one)."""
        return self.store.get(session_id)

    def sessions(
        self, caller: Principal, page: PageParams, user: str | None = None
    ) -> tuple[list[ChatKitSession], bool]:
        """The account's ChatKit sessions (optionally one user's), one page in id order."""
        return self.store.page_of_account(caller.account_id, user, page)

    def cancel(self, caller: Principal, session_id: str) -> ChatKitSession:
        row = self.owned(caller, session_id)
        row.status = "cancelled"
        return row

    # Threads: the ChatKit face of conversations

    def threads(
        self, caller: Principal, user: str | None, page: PageParams
    ) -> tuple[list[tuple[ConversationSession, str]], bool]:
        """The account's ChatKit conversations (optionally one user's), with their users.

        A client secret lists its own user's threads only (the seed: `user` "ensures this
        Session can access other objects that have the same `user` scope").
        """
        if caller.session_scope is not None:
            if user is not None and user != caller.scope_user:
                raise Forbidden(
                    "A client secret lists the threads of its own user only.",
                    param="user",
                    code="client_secret_forbidden",
                )
            user = caller.scope_user
        elif caller.external_user_id is not None:
            raise Forbidden(
                "ChatKit threads are the account's; an external user may not list them.",
                code="account_only",
            )
        rows, has_more = ConversationService(self.db).sessions_of_kind(
            caller, CHATKIT_KIND, among=self.store.ids_of(caller.account_id, user), page=page
        )
        users = self.store.users_of([row.id for row in rows])
        return [(row, users[row.id]) for row in rows], has_more

    def reach(self, caller: Principal, session_id: str) -> Principal:
        """The caller, moved onto `session_id` when it is a client secret and that session is a
        ChatKit thread of the same user in the same account; otherwise the caller unchanged
        (and the session's own checks answer)."""
        if caller.session_scope is None or caller.session_scope == session_id:
            return caller
        row = self.store.get(session_id)
        if row is None or row.account_id != caller.account_id or row.user != caller.scope_user:
            return caller
        return caller.within(row.id)

    def thread(self, caller: Principal, thread_id: str) -> tuple[ConversationSession, str]:
        """A ChatKit conversation the caller may use, and its user; 404 for any other one."""
        caller = self.reach(caller, thread_id)
        conversation = ConversationService(self.db).owned_session(caller, thread_id, "thread_id")
        row = self.store.get(conversation.id)
        if row is None:
            raise NotFound(f"No ChatKit thread '{thread_id}'.", param="thread_id")
        return conversation, row.user

    def delete_thread(self, caller: Principal, thread_id: str) -> ConversationSession:
        conversation, _ = self.thread(caller, thread_id)
        ConversationService(self.db).soft_delete(conversation)
        return conversation

    def items(
        self, caller: Principal, thread_id: str, page: PageParams
    ) -> tuple[list[ConversationMessage], bool]:
        conversation, _ = self.thread(caller, thread_id)
        return ConversationService(self.db).page_messages(conversation, page)

    # Client secrets

    def session_of(self, secret: str) -> str | None:
        """The session a valid, active client secret speaks for; reads only, counts nothing."""
        prefix = prefix_of(secret, SECRET_TYPE)
        row = self.store.by_prefix(prefix) if prefix else None
        if row is None or not key_matches(secret, row.secret_hash) or status_of(row) != "active":
            return None
        if not TokenService(self.db).lineage_is_live(row.api_key_id, row.token_id):
            return None
        return row.id

    def authenticate(self, secret: str) -> Principal:
        """The principal of a client secret, counting this request against its rate limit."""
        prefix = prefix_of(secret, SECRET_TYPE)
        row = self.store.by_prefix(prefix, lock=True) if prefix else None
        if row is None or not key_matches(secret, row.secret_hash):
            raise Unauthorized("Invalid client secret.", code="invalid_client_secret")
        state = status_of(row)
        if state != "active":
            raise Unauthorized(f"This client secret is {state}.", code=f"client_secret_{state}")
        if not TokenService(self.db).lineage_is_live(row.api_key_id, row.token_id):
            raise Unauthorized(
                "The key or auth token that created this client secret has been revoked.",
                code="client_secret_revoked",
            )
        now = utcnow()
        bucket = f"chatkit:{row.id}"
        used, oldest = self.store.hits_since(bucket, now - WINDOW)
        if used >= row.max_requests_per_minute:
            wait = math.ceil(((oldest or now) + WINDOW - now).total_seconds())
            raise RateLimited(
                f"Rate limit of {row.max_requests_per_minute} requests a minute reached.",
                headers={"Retry-After": str(max(wait, 1))},
            )
        self.store.prune_hits(bucket, now - WINDOW)
        self.store.add_hit(bucket, now)
        return Principal(
            account_id=row.account_id, api_key_id=None, session_scope=row.id, scope_user=row.user
        )


class ClientSecrets:
    """Client secrets as a kind of bearer that accounts authenticates (registered by the app)."""

    prefix = SECRET_TYPE

    def authenticate(self, db: Session, token: str) -> Principal:
        return ChatKitService(db).authenticate(token)

    def scope_of(self, db: Session, token: str) -> str | None:
        session_id = ChatKitService(db).session_of(token)
        return f"chatkit:{session_id}" if session_id else None
