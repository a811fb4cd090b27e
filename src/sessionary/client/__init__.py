"""The Sessionary Python SDK: `Sessionary` (sync) and `AsyncSessionary` (async), on httpx.

It imports nothing from the server side, so it can be used from any Python program::

    from sessionary.client import Sessionary

    with Sessionary(api_key="sk_sy_...") as client:
        session = client.create_assistant_session().data
        reply = client.create_assistant_completion(session.session_id, "Hello!")
        print(reply.data.output_text, reply.credits_charged)
"""

from sessionary.client import models
from sessionary.client.clients import AsyncSessionary, Sessionary
from sessionary.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientCreditsError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    SessionaryError,
    UnprocessableEntityError,
)
from sessionary.client.models import ExternalUser, Response, ResponseEvent
from sessionary.client.streaming import AsyncStream, Stream
from sessionary.client.transport import Result

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncSessionary",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ExternalUser",
    "InsufficientCreditsError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "Response",
    "ResponseEvent",
    "Result",
    "Sessionary",
    "SessionaryError",
    "Stream",
    "UnprocessableEntityError",
    "models",
]
