"""Wire shapes of the accounts domain."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class KeyInfo(BaseModel):
    id: str
    prefix: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class WhoAmI(BaseModel):
    object: str = "account"
    account_id: str
    name: str
    api_key_id: str
