"""What the sync and async clients share: configuration, request building, the retry policy and
answer parsing. Only the act of sending differs between them."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from sessionary.client.errors import SessionaryError, credits_header, error_for
from sessionary.client.operations import Call

T = TypeVar("T", bound=BaseModel)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
RETRIED_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Result(Generic[T]):
    """A typed answer with what came with it: status, headers and the credits it moved."""

    data: T
    status: int
    headers: httpx.Headers

    @property
    def credits_charged(self) -> Decimal | None:
        return credits_header(self.headers, "x-credits-charged")

    @property
    def credits_remaining(self) -> Decimal | None:
        return credits_header(self.headers, "x-credits-remaining")

    @property
    def request_id(self) -> str | None:
        value = self.headers.get("x-request-id")
        return str(value) if value else None


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None
    auth_token: str | None
    external_user_api_key: str | None
    timeout: float
    max_retries: int
    default_headers: Mapping[str, str]

    @classmethod
    def build(
        cls,
        *,
        api_key: str | None,
        auth_token: str | None,
        external_user_api_key: str | None,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        default_headers: Mapping[str, str] | None,
    ) -> ClientConfig:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        return cls(
            base_url=(base_url or os.environ.get("SESSIONARY_BASE_URL") or DEFAULT_BASE_URL).rstrip(
                "/"
            ),
            api_key=api_key or os.environ.get("SESSIONARY_API_KEY") or None,
            auth_token=auth_token,
            external_user_api_key=external_user_api_key,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=dict(default_headers or {}),
        )

    @property
    def root_url(self) -> str:
        """The server root: samsar-js calls a few routes there (`/users/verify_token`, ...)."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "sessionary-python"}
        bearer = self.auth_token or self.api_key
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if self.external_user_api_key:
            headers["x-external-user-api-key"] = self.external_user_api_key
        return {**headers, **self.default_headers}


@dataclass(frozen=True)
class Prepared:
    """One request, identical across its retries (so is its Idempotency-Key)."""

    method: str
    url: str
    json: dict[str, Any] | None
    params: dict[str, Any] | None
    headers: dict[str, str]


def prepare(config: ClientConfig, call: Call[Any], *, stream: bool = False) -> Prepared:
    url = config.root_url + call.path if call.root else f"{config.base_url}/{call.path.lstrip('/')}"
    headers: dict[str, str] = {}
    if call.method == "POST":
        headers["Idempotency-Key"] = f"sdk-{uuid.uuid4().hex}"
    if stream:
        headers["Accept"] = "text/event-stream"
    return Prepared(call.method, url, call.json, call.params, headers)


def should_retry(attempt: int, config: ClientConfig, response: httpx.Response | None) -> bool:
    if attempt >= config.max_retries:
        return False
    return response is None or response.status_code in RETRIED_STATUSES


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """`Retry-After` when the server gives one, else exponential backoff with jitter."""
    if response is not None:
        after = response.headers.get("retry-after")
        try:
            if after is not None:
                return min(max(float(after), 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    return min(0.5 * 2.0**attempt, 8.0) * random.uniform(0.75, 1.0)  # noqa: S311 - jitter


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_for(response, body_of(response))


def parse(call: Call[T], response: httpx.Response) -> Result[T]:
    raise_for_status(response)
    try:
        data = call.model.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise SessionaryError(f"Unexpected answer from {call.path}: {exc}") from exc
    return Result(data=data, status=response.status_code, headers=response.headers)
