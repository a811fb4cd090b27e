"""Wire shapes of the accounts domain."""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class KeyInfo(BaseModel):
    id: str
    prefix: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyObject(BaseModel):
    """An account key as listed; `key` holds the secret only in the answer that created it."""

    id: str
    object: str = "api_key"
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    key: str | None = None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200, description="A label for the key.")


class WhoAmI(BaseModel):
    object: str = "account"
    account_id: str
    name: str
    api_key_id: str | None
    external_user_id: str | None = None
    # The account's assistant settings, shown to the account itself only.
    system_prompt: str | None = None
    assistant_model: str | None = None


class RevokeToken(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    auth_token: str | None = Field(
        default=None, max_length=200, validation_alias=AliasChoices("authToken", "auth_token")
    )


class AuthTokenInfo(BaseModel):
    """A live auth token as its account sees it (never the token itself)."""

    id: str
    object: str = "auth_token"
    prefix: str
    external_user_id: str | None
    api_key_id: str | None = Field(description="The API key this token descends from.")
    parent_token_id: str | None = Field(description="The token that minted it (a login token).")
    created_at: datetime
    expires_at: datetime
