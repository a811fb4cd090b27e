"""Typed answers of the SDK. Every model keeps fields it does not know (`extra="allow"`), so a
newer server never breaks an older client; samsar's camelCase names are read as snake_case."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _camel(name: str, camel: str, *, required: bool = False) -> Any:
    if required:
        return Field(validation_alias=AliasChoices(name, camel))
    return Field(default=None, validation_alias=AliasChoices(name, camel))


class ExternalUser(_Model):
    """Who a platform says one of its users is: `provider` and `unique_key` or
    `external_user_id` name it; the other fields describe it."""

    provider: str
    unique_key: str | None = None
    external_user_id: str | None = None
    external_app_id: str | None = None
    external_company_id: str | None = None
    external_account_id: str | None = None
    email: str | None = None
    username: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    user_type: str | None = None
    metadata: dict[str, Any] | None = None


class ExternalUserSummary(_Model):
    id: str | None = None
    provider: str | None = None
    external_user_id: str | None = None
    unique_key: str | None = None
    email: str | None = None
    username: str | None = None
    display_name: str | None = None
    generation_credits: Decimal | None = None
    has_external_api_key: bool | None = None
    total_requests: int | None = None
    total_credits_used: Decimal | None = None
    total_credits_refunded: Decimal | None = None
    total_credits_purchased: Decimal | None = None
    last_request_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class _ForUser(_Model):
    external_user: ExternalUserSummary | None = None


class AssistantSession(_ForUser):
    session_id: str
    request_id: str | None = None
    session_type: str | None = None
    session_name: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None


class SystemPrompt(_ForUser):
    system_prompt: str | None = None
    model: str | None = None
    selected_assistant_model: str | None = None


class OutputItem(_Model):
    type: str
    id: str | None = None
    role: str | None = None
    status: str | None = None
    content: list[dict[str, Any]] | None = None
    result: str | None = None
    revised_prompt: str | None = None


class Response(_Model):
    """A Responses API object, as `/assistant/completion` and `/responses` answer."""

    id: str
    object: str = "response"
    status: str | None = None
    model: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    output_text: str = ""
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None


class Enhanced(_Model):
    content: str


class Template(_ForUser):
    template_id: str
    name: str | None = None
    template_hash: str | None = None
    record_count: int = 0
    status: str | None = None
    structured_fields: list[dict[str, Any]] | dict[str, Any] | None = None
    unstructured_fields: list[Any] | None = None
    embedding_model: str | None = None


class TemplateDeletion(_Model):
    template_id: str
    deleted_count: int = 0
    record_count: int = 0
    status: str | None = None


class TemplateStatus(_Model):
    template_id: str
    has_embeddings: bool = False
    record_count: int = 0
    status: str | None = None


class TemplatePage(_Model):
    templates: list[dict[str, Any]] = Field(default_factory=list)
    pagination: dict[str, Any] = Field(default_factory=dict)


class SearchHit(_Model):
    id: str
    score: float
    structured_filters: dict[str, Any] | None = None
    record: dict[str, Any] | None = None


class SearchResults(_Model):
    template_id: str
    template_name: str | None = None
    structured_filters: dict[str, Any] = Field(default_factory=dict)
    semantic_query: str | None = None
    results: list[SearchHit] = Field(default_factory=list)


class SimilarResults(_Model):
    template_id: str
    structured_filters: dict[str, Any] = Field(default_factory=dict)
    matches: list[SearchHit] = Field(default_factory=list)


class Credits(_ForUser):
    remaining_credits: Decimal = _camel("remaining_credits", "remainingCredits", required=True)
    last_top_up: dict[str, Any] | None = _camel("last_top_up", "lastTopUp")


class ExternalUserSession(Credits):
    created: bool | None = None
    external_api_key: str | None = None


class CreditsGrant(_ForUser):
    credits_granted: Decimal = _camel("credits_granted", "creditsGranted", required=True)
    remaining_credits: Decimal = _camel("remaining_credits", "remainingCredits", required=True)
    internal_remaining_credits: Decimal | None = _camel(
        "internal_remaining_credits", "internalRemainingCredits"
    )


class UsageCharge(_ForUser):
    utility_type: str | None = _camel("utility_type", "utilityType")
    credits_charged: Decimal = _camel("credits_charged", "creditsCharged", required=True)
    remaining_credits: Decimal = _camel("remaining_credits", "remainingCredits", required=True)
    pricing: dict[str, Any] | None = None


class LibraryRequest(_Model):
    request_id: str
    upstream_request_id: str | None = None
    upstream_session_id: str | None = None
    route_key: str | None = None
    status: str | None = None
    credits_charged: Decimal | None = None
    remaining_credits: Decimal | None = None
    created_at: str | None = None
    is_archived: bool = False
    is_published: bool = False
    published_title: str | None = None


class LibraryPage(_ForUser):
    requests: list[LibraryRequest] = Field(default_factory=list)


class LibraryUpdate(_ForUser):
    request: LibraryRequest
    publication: dict[str, Any] | None = None


class LoginToken(_ForUser):
    login_token: str = _camel("login_token", "loginToken", required=True)
    expires_at: str | None = _camel("expires_at", "expiresAt")
    expires_in_seconds: int | None = _camel("expires_in_seconds", "expiresInSeconds")
    login_url: str | None = _camel("login_url", "loginUrl")


class VerifiedSession(_Model):
    auth_token: str | None = _camel("auth_token", "authToken")
    is_external_user: bool | None = _camel("is_external_user", "isExternalUser")
    id: str | None = _camel("id", "_id")
    account_id: str | None = _camel("account_id", "accountId")
    provider: str | None = None
    external_user_id: str | None = _camel("external_user_id", "externalUserId")
    unique_key: str | None = _camel("unique_key", "uniqueKey")
    generation_credits: Decimal | None = _camel("generation_credits", "generationCredits")
    expires_at: str | None = _camel("expires_at", "expiresAt")


class Embedding(_Model):
    index: int
    embedding: list[float]


class Embeddings(_Model):
    data: list[Embedding]
    model: str
    dimensions: int | None = None
    usage: dict[str, Any] | None = None


class ResponseEvent(_Model):
    """One server-sent event of a streamed turn (`response.output_text.delta`, ...)."""

    type: str
    sequence_number: int | None = None
    delta: str | None = None
    text: str | None = None
    response: Response | None = None


class SessionInfo(_Model):
    id: str
    kind: str | None = None
    name: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    last_response_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionPage(_Model):
    data: list[SessionInfo] = Field(default_factory=list)
    has_more: bool = False
    last_id: str | None = None


class Message(_Model):
    id: str
    role: str
    created_at: int | None = None
    content: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(
            part.get("text", {}).get("value", "")
            for part in self.content
            if part.get("type") == "text"
        )


class MessagePage(_Model):
    data: list[Message] = Field(default_factory=list)
    has_more: bool = False
    last_id: str | None = None
