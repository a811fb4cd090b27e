"""Errors raised by the SDK: one class per HTTP status family, carrying the server's envelope."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx


def credits_header(headers: httpx.Headers | None, name: str) -> Decimal | None:
    value = headers.get(name) if headers is not None else None
    return Decimal(value) if value else None


class SessionaryError(Exception):
    """Base of every SDK error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(SessionaryError):
    """The server could not be reached (after the retries)."""


class APITimeoutError(APIConnectionError):
    """The server did not answer in time (after the retries)."""


class APIStatusError(SessionaryError):
    """The server answered with an error status; `body` is its JSON (or text)."""

    status_code: int = 0

    def __init__(self, response: httpx.Response, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = str(error.get("message") or f"HTTP {response.status_code}")
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.headers = response.headers
        self.type: str | None = error.get("type")
        self.param: str | None = error.get("param")
        self.code: str | None = error.get("code")
        self.request_id = response.headers.get("x-request-id")
        self.credits_remaining = credits_header(response.headers, "x-credits-remaining")

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class InsufficientCreditsError(APIStatusError):
    status_code = 402


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class RequestTooLargeError(APIStatusError):
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    """Any 5xx (502 upstream error, 503 unavailable, 504 upstream timeout, ...)."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        InsufficientCreditsError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        UnprocessableEntityError,
        RateLimitError,
    )
}


def error_for(response: httpx.Response, body: Any) -> APIStatusError:
    if response.status_code >= 500:
        return InternalServerError(response, body)
    return _BY_STATUS.get(response.status_code, APIStatusError)(response, body)
