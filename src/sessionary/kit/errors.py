"""The one error envelope, `{"error": {"message", "type", "param", "code"}}`, for every failure.

Services raise `ApiError` subclasses (they carry no HTTP objects, only a status number); the
handlers installed by `install_error_handlers` turn those, FastAPI's validation errors and
Starlette's own 404/405s into the envelope, so a client never sees another shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DataError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessionary.kit.json_answer import JSONAnswer
from sessionary.kit.request_context import current_request_id
from sessionary.kit.routing import allowed_methods

db_log = structlog.get_logger("sessionary.database")

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "idempotency_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class ApiError(Exception):
    """An error with a status and a message meant for the caller."""

    status_code = 400
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})


class InvalidRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401
    code = "invalid_api_key"


class InsufficientCredits(ApiError):
    status_code = 402
    code = "insufficient_credits"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "request_too_large"


class IdempotencyMismatch(ApiError):
    status_code = 422
    code = "idempotency_key_reused"


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limit_exceeded"


class UpstreamError(ApiError):
    status_code = 502
    code = "upstream_error"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"


class UpstreamTimeout(ApiError):
    status_code = 504
    code = "upstream_timeout"


# The database down, busy past its timeout, or a transaction its connection took down with it
# (a `PendingRollbackError`, found at its commit): a 503, or a stream's end that says so.
DATABASE_ERRORS = (OperationalError, PendingRollbackError, PoolTimeout)
# What a stream ends with when the database could not take its turn's end after the deltas were
# out: the `credits` beside it say what was charged.
STREAM_END_UNSTORED = (
    "The database was unavailable or busy when the turn ended: the turn was not stored. "
    "Retry shortly."
)


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONAnswer:
    all_headers = dict(headers or {})
    request_id = current_request_id()
    if request_id:
        all_headers.setdefault("x-request-id", request_id)
    return JSONAnswer(
        error_body(status, message, param=param, code=code), status_code=status, headers=all_headers
    )


def _param_from_loc(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    return ".".join(parts) or None


def invalid_shape(exc: ValidationError, what: str, param: str) -> InvalidRequest:
    """A 400 for a nested object (a tool) that its model refused: its first error, where it is
    (`param` and the error's path), "unknown key" for a key the model does not take."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return InvalidRequest(f"Invalid {what}: '{where}': {reason}.", param=f"{param}.{where}")


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem, phrased for a person, and the field it concerns."""
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    param = _param_from_loc(first.get("loc", ()))
    message = str(first.get("msg", "Invalid value"))
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'." if param else "Missing required body."
    elif first.get("type") == "extra_forbidden":
        message = f"Unknown parameter: '{param}'."
    elif param:
        message = f"Invalid '{param}': {message}."
    extra = len(errors) - 1
    if extra:
        message += f" ({extra} more problem{'s' if extra > 1 else ''} in the request.)"
    return message, param


async def _api_error(_: Request, exc: Exception) -> JSONAnswer:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.message, param=exc.param, code=exc.code, headers=exc.headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONAnswer:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation_error(exc)
    return error_response(400, message, param=param, code="invalid_request")


_HTTP_ERROR_CODES = {404: "route_not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONAnswer:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else None
    if status == 404 and (detail is None or detail == "Not Found"):
        detail = f"No route {request.method} {request.url.path}."
    headers = getattr(exc, "headers", None)
    if status == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}."
        headers = {
            **(headers or {}),
            "Allow": ", ".join(allowed_methods(request.app, request.scope)),
        }
    return error_response(
        status, detail or "Request failed.", code=_HTTP_ERROR_CODES.get(status), headers=headers
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONAnswer:
    # Lost connection, too many clients, a lock not granted in time: refuse, never half-apply.
    # Logged without the statement's parameters (they may hold personal data).
    db_log.warning(
        "database_unavailable",
        path=request.url.path,
        error_type=type(getattr(exc, "orig", exc)).__name__,
        detail=str(getattr(exc, "orig", exc)).splitlines()[0][:200] if str(exc) else "",
    )
    return error_response(
        503,
        "The database is unavailable or busy; nothing was done. Retry shortly.",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


async def _value_out_of_range(request: Request, exc: Exception) -> JSONAnswer:
    # A number past the database's integer range, or a value of the wrong type for a column
    # (PostgreSQL's DataError; SQLite's driver raises OverflowError): the request's fault.
    db_log.info("value_out_of_range", path=request.url.path, error_type=type(exc).__name__)
    return error_response(
        400,
        "A value in this request is out of range or of the wrong type for what it names.",
        code="value_out_of_range",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in DATABASE_ERRORS:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(DataError, _value_out_of_range)
    app.add_exception_handler(OverflowError, _value_out_of_range)
