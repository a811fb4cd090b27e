"""Request shapes of the external-user routes, with samsar-js's snake_case and camelCase names."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import QueryParams

from sessionary.assistant.schemas import CompletionRequest, NewSessionRequest, SystemPromptRequest
from sessionary.kit.errors import InvalidRequest
from sessionary.search.schemas import EmbeddingsRequest, PlainText

MAX_PROFILE_JSON = 16_384


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class ExternalUserIdentity(BaseModel):
    """Who the platform says the user is; (provider, unique_key) names it within the account."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)

    provider: str = Field(min_length=1, max_length=100)
    unique_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        validation_alias=_alias("unique_key", "uniqueKey"),
    )
    external_user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        validation_alias=_alias("external_user_id", "externalUserId"),
    )
    external_app_id: str | None = Field(
        default=None, max_length=256, validation_alias=_alias("external_app_id", "externalAppId")
    )
    external_company_id: str | None = Field(
        default=None,
        max_length=256,
        validation_alias=_alias("external_company_id", "externalCompanyId"),
    )
    external_account_id: str | None = Field(
        default=None,
        max_length=256,
        validation_alias=_alias("external_account_id", "externalAccountId"),
    )
    email: str | None = Field(default=None, max_length=320)
    username: str | None = Field(default=None, max_length=200)
    display_name: str | None = Field(
        default=None, max_length=200, validation_alias=_alias("display_name", "displayName")
    )
    avatar_url: str | None = Field(
        default=None, max_length=2048, validation_alias=_alias("avatar_url", "avatarUrl")
    )
    user_type: str | None = Field(
        default=None, max_length=100, validation_alias=_alias("user_type", "userType")
    )
    browser_installation: dict[str, Any] | None = Field(
        default=None, validation_alias=_alias("browser_installation", "browserInstallation")
    )
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _named(self) -> ExternalUserIdentity:
        if self.unique_key is None and self.external_user_id is None:
            raise ValueError("external_user needs unique_key or external_user_id")
        for name in ("browser_installation", "metadata"):
            value = getattr(self, name)
            if value is not None and len(json.dumps(value)) > MAX_PROFILE_JSON:
                raise ValueError(f"external_user.{name} is larger than {MAX_PROFILE_JSON} bytes")
        return self

    @property
    def key(self) -> str:
        """The name that is unique per (account, provider): unique_key, else external_user_id."""
        return self.unique_key or self.external_user_id or ""

    @property
    def platform_id(self) -> str:
        return self.external_user_id or self.unique_key or ""


_IDENTITY_QUERY_KEYS = ("provider", "unique_key", "uniqueKey", "external_user_id", "externalUserId")


def identity_from_query(query: QueryParams) -> ExternalUserIdentity | None:
    """GET routes carry the identity as query parameters (samsar-js's buildExternalUserQuery)."""
    if not any(k in query for k in _IDENTITY_QUERY_KEYS):
        return None
    try:
        return ExternalUserIdentity.model_validate(dict(query))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "external_user"
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


class _Scoped(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    external_user: ExternalUserIdentity | None = Field(
        default=None, validation_alias=_alias("external_user", "externalUser")
    )


class UserSessionRequest(_Scoped):
    rotate_api_key: bool = Field(
        default=False, validation_alias=_alias("rotate_api_key", "rotateApiKey")
    )


class GrantInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    credits: int = Field(gt=0, le=1_000_000_000, strict=True)


class GrantRequest(_Scoped):
    input: GrantInput


class AssistantSessionRequest(NewSessionRequest, _Scoped):
    pass


class UserPromptRequest(SystemPromptRequest, _Scoped):
    pass


class UserCompletionRequest(CompletionRequest, _Scoped):
    pass


class UserPlainText(PlainText, _Scoped):
    pass


class UserEmbeddingsRequest(EmbeddingsRequest, _Scoped):
    pass


class LoginTokenRequest(_Scoped):
    redirect: str | None = Field(default=None, max_length=2048)


class LibraryRequest(_Scoped):
    request_id: str = Field(
        min_length=1, max_length=64, validation_alias=_alias("request_id", "requestId")
    )


class PublishRequest(LibraryRequest):
    title: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=5000)
    tags: list[str] | str | None = Field(default=None)


Amount = Annotated[Decimal, Field(ge=0, le=Decimal(1_000_000_000), allow_inf_nan=False)]


class UtilityChargeRequest(_Scoped):
    utility_type: str | None = Field(
        default=None, max_length=64, validation_alias=_alias("utility_type", "utilityType", "type")
    )
    provider: str | None = Field(default=None, max_length=100)
    model: str | None = Field(
        default=None, max_length=200, validation_alias=_alias("model", "model_id", "modelId")
    )
    text: str | None = Field(
        default=None, max_length=100_000, validation_alias=_alias("text", "content")
    )
    characters: int | None = Field(
        strict=True,
        default=None,
        ge=0,
        le=1_000_000_000,
        validation_alias=_alias("characters", "character_count", "characterCount"),
    )
    duration_ms: Amount | None = Field(
        default=None, validation_alias=_alias("duration_ms", "durationMs")
    )
    duration_seconds: Amount | None = Field(
        default=None, validation_alias=_alias("duration_seconds", "durationSeconds")
    )
    duration_minutes: Amount | None = Field(
        default=None, validation_alias=_alias("duration_minutes", "durationMinutes")
    )
    duration_hours: Amount | None = Field(
        default=None, validation_alias=_alias("duration_hours", "durationHours")
    )
    crawl_credits: Amount | None = Field(
        default=None,
        validation_alias=_alias("firecrawl_credits_used", "firecrawlCreditsUsed", "crawl_credits"),
    )
    cost_usd: Amount | None = Field(default=None, validation_alias=_alias("cost_usd", "costUsd"))
    pricing_multiplier: Decimal = Field(
        default=Decimal(1),
        gt=0,
        le=100,
        allow_inf_nan=False,
        validation_alias=_alias("pricing_multiplier", "pricingMultiplier", "multiplier"),
    )
    metadata: dict[str, Any] | None = None
