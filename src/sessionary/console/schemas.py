"""The console's forms: sign-in, sign-out and the operator's account switch.

They are urlencoded by the browser (no script needed to sign in or out), parsed by the route's
small form reader and checked here, so a route sees typed fields only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class SignInForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api_key: str = ""

    @field_validator("api_key")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class SessionForm(BaseModel):
    """A change to the browser session itself: it carries the session's CSRF token."""

    model_config = ConfigDict(extra="ignore")

    csrf_token: str = ""
    account_id: str = ""
    next_page: str = "/console"

    @field_validator("next_page")
    @classmethod
    def _console_path(cls, value: str) -> str:
        """Back to a console page only: never a redirect to another host."""
        if not value.startswith("/console") or len(value) > 200:
            return "/console"
        return value
