"""The OpenAPI document as the server really behaves: every error status it can answer, in the
one error envelope; bearer authentication; SSE where a route streams.

FastAPI documents only 200 and its own 422; clients and fuzzers (schemathesis) read the document
to know what to expect, so it must say what the error handlers actually send.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ENVELOPE = "ErrorEnvelope"
ERRORS = {
    "400": "Invalid request: a missing or ill-typed field (`param` names it)",
    "401": "Missing, malformed, unknown, expired or revoked credential",
    "402": "Insufficient credits (`x-credits-remaining` says what is left)",
    "403": "The object belongs to another account or user, or the credential may not call this",
    "404": "No such object",
    "409": "The same Idempotency-Key is still running (`Retry-After`)",
    "413": "Body over the size limit",
    "422": "An Idempotency-Key reused with another body",
    "429": "Rate limit reached (`Retry-After`)",
    "500": "A bug (the `x-request-id` finds the log line)",
    "502": "The model provider failed",
    "503": "The database or a local model is unavailable (`Retry-After`)",
    "504": "The model provider timed out",
}
PUBLIC = frozenset({"/healthz", "/readyz", "/users/verify_token"})
STREAMING = frozenset(
    {
        "/v1/assistant/completion",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/external_users/assistant/completion",
    }
)


def _envelope_schema() -> dict[str, Any]:
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": nullable,
                    "code": nullable,
                },
            }
        },
    }


def _document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ENVELOPE] = _envelope_schema()
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An account key (sk_sy_), an external user's key (sk_eu_), an auth "
            "token (at_sy_) or a ChatKit client secret (ek_).",
        }
    }
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ENVELOPE}"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERRORS.items():
                responses.setdefault(status, {"description": description, "content": error})
            if path not in PUBLIC:
                operation["security"] = [{"bearer": []}]
            if path in STREAMING:
                ok = responses.setdefault("200", {"description": "Successful Response"})
                ok.setdefault("content", {})["text/event-stream"] = {"schema": {"type": "string"}}
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
