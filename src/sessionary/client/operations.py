"""Every SDK method, once: each builds a `Call` (what to send, what comes back) that the sync and
the async client then send. Names and parameters follow samsar-js, in snake_case."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from sessionary.client import models as m

T = TypeVar("T", bound=BaseModel)

UserLike = m.ExternalUser | Mapping[str, Any]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    model: type[T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    root: bool = False  # at the server root (not under /v1), where samsar-js calls it


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def identity(user: UserLike | None) -> dict[str, Any] | None:
    if user is None:
        return None
    if isinstance(user, m.ExternalUser):
        return user.model_dump(exclude_none=True)
    return dict(user)


def _post(path: str, model: type[T], body: Mapping[str, Any], *, root: bool = False) -> Call[T]:
    return Call("POST", path, model, json=_clean(body), root=root)


def _get(path: str, model: type[T], params: Mapping[str, Any] | None = None) -> Call[T]:
    return Call("GET", path, model, params=_clean(params or {}))


def _for_user(user: UserLike | None, **body: Any) -> dict[str, Any]:
    return {**body, "external_user": identity(user)}


# Assistant


def create_assistant_session(
    session_name: str | None = None, metadata: Mapping[str, str] | None = None
) -> Call[m.AssistantSession]:
    """A blank assistant session; pass its `session_id` to completions."""
    return _post(
        "assistant/session",
        m.AssistantSession,
        {"session_name": session_name, "metadata": metadata},
    )


def set_assistant_system_prompt(
    system_prompt: str | None, model: str | None = None
) -> Call[m.SystemPrompt]:
    """Store (or clear, with None) the account's system prompt."""
    return Call(
        "POST",
        "assistant/set_system_prompt",
        m.SystemPrompt,
        json={"system_prompt": system_prompt, **_clean({"model": model})},
    )


def assistant_completion_body(
    session_id: str, input: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    return _clean({"session_id": session_id, "input": input, **options})


def create_assistant_completion(
    session_id: str, input: Any = None, **options: Any
) -> Call[m.Response]:
    """One turn on a session (`input`: a string, a message, messages or content parts; options:
    `max_output_tokens`, `temperature`, `instructions`, `text`, `tools`, ...)."""
    return _post(
        "assistant/completion", m.Response, assistant_completion_body(session_id, input, options)
    )


def enhance_message(
    message: str,
    language: str | None = None,
    maxwords: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[m.Enhanced]:
    """Rewrite a message keeping its intent (20 credits)."""
    body = {"message": message, "language": language, "maxwords": maxwords, "metadata": metadata}
    return _post("chat/enhance", m.Enhanced, body)


# Embedding templates


def create_embedding(
    records: Sequence[Mapping[str, Any]],
    name: str | None = None,
    field_options: Any = None,
) -> Call[m.Template]:
    """A template from JSON records."""
    body = {"records": list(records), "name": name, "field_options": field_options}
    return _post("chat/create_embedding", m.Template, body)


def update_embedding(
    template_id: str, records: Sequence[Mapping[str, Any]], field_options: Any = None
) -> Call[m.Template]:
    """Upsert records into a template (by their ids)."""
    body = {"template_id": template_id, "records": list(records), "field_options": field_options}
    return _post("chat/update_embedding", m.Template, body)


def generate_embeddings_from_plain_text(
    plain_text: Any, name: str | None = None, field_options: Any = None
) -> Call[m.Template]:
    """A template from plain text (strings, or entries with `content`, `url`, `title`)."""
    body = {"plain_text": plain_text, "name": name, "field_options": field_options}
    return _post("chat/generate_embeddings_from_plain_text", m.Template, body)


def delete_embeddings(template_id: str) -> Call[m.TemplateDeletion]:
    """Empty a template (free)."""
    return _post("chat/delete_embeddings", m.TemplateDeletion, {"template_id": template_id})


def delete_embedding(template_id: str, ids: Sequence[str]) -> Call[m.TemplateDeletion]:
    """Delete records by id (free)."""
    body = {"template_id": template_id, "ids": list(ids)}
    return _post("chat/delete_embedding", m.TemplateDeletion, body)


def search_against_embedding(
    template_id: str,
    search_term: str,
    *,
    search_params: Mapping[str, Any] | None = None,
    structured_filters: Mapping[str, Any] | None = None,
    limit: int | None = None,
    rerank: bool | None = None,
    include_raw: bool | None = None,
    search_date: str | None = None,
) -> Call[m.SearchResults]:
    """Natural-language search: filters extracted from the term, then vector ranking."""
    body = {
        "template_id": template_id,
        "search_term": search_term,
        "search_params": search_params,
        "structured_filters": structured_filters,
        "limit": limit,
        "rerank": rerank,
        "include_raw": include_raw,
        "search_date": search_date,
    }
    return _post("chat/search_against_embedding", m.SearchResults, body)


def similar_to_embedding(
    template_id: str,
    search_term: str | None = None,
    *,
    search_json: Mapping[str, Any] | None = None,
    search_params: Mapping[str, Any] | None = None,
    structured_filters: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> Call[m.SimilarResults]:
    """Records similar to a text or to a JSON record (vector similarity only)."""
    body = {
        "template_id": template_id,
        "search_term": search_term,
        "search_json": search_json,
        "search_params": search_params,
        "structured_filters": structured_filters,
        "limit": limit,
    }
    return _post("chat/similar_to_embedding", m.SimilarResults, body)


def list_embedding_templates(
    limit: int | None = None, offset: int | None = None
) -> Call[m.TemplatePage]:
    return _get("chat/embedding_templates", m.TemplatePage, {"limit": limit, "offset": offset})


def get_embedding_status(template_id: str) -> Call[m.TemplateStatus]:
    return _get("chat/embedding_status", m.TemplateStatus, {"template_id": template_id})


def create_embeddings(input: str | Sequence[str], model: str | None = None) -> Call[m.Embeddings]:
    """Raw vectors (OpenAI's `/embeddings`), billed per input token."""
    body = {"input": input if isinstance(input, str) else list(input), "model": model}
    return _post("embeddings", m.Embeddings, {**body, "encoding_format": "float"})


# Credits and client sessions


def get_credits_balance() -> Call[m.Credits]:
    """The caller's balance (an external user's own when it calls)."""
    return _get("credits", m.Credits)


def create_login_token() -> Call[m.LoginToken]:
    """A single-use, short-lived login token for the account."""
    return _post("create_login_token", m.LoginToken, {})


def verify_client_session(
    login_token: str | None = None, auth_token: str | None = None
) -> Call[m.VerifiedSession]:
    """Exchange a login token for an auth token, or verify an auth token (or the client's own)."""
    params = _clean({"loginToken": login_token, "authToken": auth_token})
    return Call("GET", "/users/verify_token", m.VerifiedSession, params=params, root=True)


# External users


def create_external_user_session(
    external_user: UserLike, rotate_api_key: bool = False
) -> Call[m.ExternalUserSession]:
    """Create or refresh an external user; its key comes back at creation and on rotation."""
    body = _for_user(external_user, rotate_api_key=rotate_api_key or None)
    return _post("external_users/session", m.ExternalUserSession, body)


def get_external_credits_balance(external_user: UserLike | None = None) -> Call[m.Credits]:
    return _get("external_users/credits", m.Credits, identity(external_user))


def grant_external_user_credits(external_user: UserLike, credits: int) -> Call[m.CreditsGrant]:
    """Move whole credits from the account to the user."""
    body = _for_user(external_user, input={"credits": credits})
    return _post("external_users/credits/grant", m.CreditsGrant, body)


def create_external_assistant_session(
    external_user: UserLike | None = None,
    session_name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Call[m.AssistantSession]:
    body = _for_user(external_user, session_name=session_name, metadata=metadata)
    return _post("external_users/utils/assistant_session", m.AssistantSession, body)


def set_external_assistant_system_prompt(
    system_prompt: str | None, external_user: UserLike | None = None
) -> Call[m.SystemPrompt]:
    """The user's own prompt (overrides the account's on its turns); None clears it."""
    body = {"system_prompt": system_prompt, **_clean({"external_user": identity(external_user)})}
    return Call("POST", "external_users/assistant/set_system_prompt", m.SystemPrompt, json=body)


def create_external_assistant_completion(
    session_id: str, input: Any = None, external_user: UserLike | None = None, **options: Any
) -> Call[m.Response]:
    """A turn on one of the user's sessions, billed to the user."""
    body = {
        **assistant_completion_body(session_id, input, options),
        "external_user": identity(external_user),
    }
    return _post("external_users/assistant/completion", m.Response, body)


def generate_external_embeddings_from_plain_text(
    plain_text: Any, name: str | None = None, external_user: UserLike | None = None
) -> Call[m.Template]:
    body = _for_user(external_user, plain_text=plain_text, name=name)
    return _post("external_users/generate_embeddings_from_plain_text", m.Template, body)


def create_external_embeddings(
    input: str | Sequence[str], model: str | None = None, external_user: UserLike | None = None
) -> Call[m.Embeddings]:
    """Raw vectors at `/v2/external/embeddings`, billed to the user named (else the caller)."""
    body = _for_user(
        external_user, input=input if isinstance(input, str) else list(input), model=model
    )
    return _post("/v2/external/embeddings", m.Embeddings, body, root=True)


def charge_external_user_utility_usage(
    utility_type: str | None = None,
    *,
    external_user: UserLike | None = None,
    characters: int | None = None,
    text: str | None = None,
    duration_seconds: float | Decimal | None = None,
    duration_ms: float | Decimal | None = None,
    firecrawl_credits_used: float | Decimal | None = None,
    cost_usd: float | Decimal | str | None = None,
    pricing_multiplier: float | Decimal | None = None,
    provider: str | None = None,
    model: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[m.UsageCharge]:
    """Charge the user for usage incurred elsewhere (TTS, STT, crawls, or a USD cost)."""
    numbers = {
        "duration_seconds": duration_seconds,
        "duration_ms": duration_ms,
        "firecrawl_credits_used": firecrawl_credits_used,
        "cost_usd": cost_usd,
        "pricing_multiplier": pricing_multiplier,
    }
    body = _for_user(
        external_user,
        utility_type=utility_type,
        characters=characters,
        text=text,
        provider=provider,
        model=model,
        metadata=metadata,
        **{k: str(v) for k, v in numbers.items() if v is not None},
    )
    return _post("external_users/utils/usage_charge", m.UsageCharge, body)


def list_external_user_requests(
    external_user: UserLike | None = None, limit: int | None = None
) -> Call[m.LibraryPage]:
    """The user's billed requests, newest first."""
    params = {**(identity(external_user) or {}), "limit": limit}
    params.pop("metadata", None)
    return _get("external_users/requests", m.LibraryPage, params)


def archive_external_user_request(
    request_id: str, external_user: UserLike | None = None
) -> Call[m.LibraryUpdate]:
    body = _for_user(external_user, request_id=request_id)
    return _post("external_users/archive", m.LibraryUpdate, body)


def publish_external_user_request(
    request_id: str,
    title: str | None = None,
    description: str | None = None,
    tags: Sequence[str] | None = None,
    external_user: UserLike | None = None,
) -> Call[m.LibraryUpdate]:
    body = _for_user(
        external_user,
        request_id=request_id,
        title=title,
        description=description,
        tags=list(tags) if tags is not None else None,
    )
    return _post("external_users/publish", m.LibraryUpdate, body)


def create_external_user_login_token(
    external_user: UserLike | None = None, redirect: str | None = None
) -> Call[m.LoginToken]:
    body = _for_user(external_user, redirect=redirect)
    return _post("external_users/create_login_token", m.LoginToken, body)


# Sessions (the conversation store behind every face)


def list_sessions(
    limit: int | None = None, after: str | None = None, order: str | None = None
) -> Call[m.SessionPage]:
    """The caller's sessions, newest first by default (cursor: `after` the last id)."""
    return _get("sessions", m.SessionPage, {"limit": limit, "after": after, "order": order})


def list_session_messages(
    session_id: str, limit: int | None = None, after: str | None = None, order: str = "asc"
) -> Call[m.MessagePage]:
    """A session's messages (its transcript), oldest first by default."""
    params = {"limit": limit, "after": after, "order": order}
    return _get(f"threads/{session_id}/messages", m.MessagePage, params)
