"""Pure ASGI middleware: request ids, access logs and metrics, and the body size limit.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import anyio
import structlog
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionary.kit.errors import error_response
from sessionary.kit.ids import new_id
from sessionary.kit.metrics import Metrics
from sessionary.kit.request_context import reset_request_id, set_request_id

access_log = structlog.get_logger("sessionary.access")
error_log = structlog.get_logger("sessionary.errors")

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_template(scope: Scope) -> str:
    """The matched route's path with its router prefix (`/v1/threads/{thread_id}`), for labels."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return str(template) if template else "unmatched"


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _CLIENT_REQUEST_ID.match(candidate):
                return candidate
    return new_id("req")


class RunningRequests:
    """The tasks of the requests this app is serving, so that the app's shutdown can let those
    uvicorn cancelled (its graceful shutdown timed out) finish what cancellation starts, a
    stream's charge for what it delivered or a hold given back, before the database closes:
    uvicorn cancels them and goes straight on to the lifespan's end."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def count(self) -> int:
        """How many requests are running now (part of `Database.work_under_way`)."""
        return len(self.tasks)

    async def finished(self, timeout: float) -> int:
        """Wait at most `timeout` seconds for the requests still running; how many are left."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        return len(self.tasks)


class ObservabilityMiddleware:
    """Gives every request an id (`x-request-id` in and out), logs it and counts it, and tells
    the client how long the server took before it answered (`Server-Timing: app;dur=<ms>`).
    Its task is in `running` for as long as the request runs."""

    def __init__(self, app: ASGIApp, metrics: Metrics, running: RunningRequests) -> None:
        self.app = app
        self.metrics = metrics
        self.running = running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        token = set_request_id(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k not in (b"x-request-id", b"server-timing")
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                # The server's own time to its answer (W3C Server-Timing), what a client's
                # clock cannot separate from its HTTP stack and the network.
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={took:.3f}".encode("latin-1")))
                message["headers"] = headers
            await send(message)

        task = asyncio.current_task()
        if task is not None:
            self.running.tasks.add(task)
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when its graceful shutdown times out;
            # unanswered, it would send a bare "Internal Server Error" in plain text.
            if not response_started:
                response = error_response(
                    503,
                    "The server stopped before this request was answered; retry it.",
                    code="server_stopping",
                    headers={"Retry-After": "1"},
                )
                with contextlib.suppress(Exception):
                    await response(scope, receive, send_with_id)
            raise
        except Exception as exc:
            # Answered here, inside the request's context, so the 500 still carries its id.
            error_log.exception(
                "unhandled_error", path=scope["path"], error_type=type(exc).__name__
            )
            if response_started:
                raise
            response = error_response(500, "Internal server error.", code="internal_error")
            await response(scope, receive, send_with_id)
        finally:
            self.running.tasks.discard(task)
            elapsed = time.perf_counter() - started
            template = route_template(scope)
            self.metrics.observe(scope["method"], template, status, elapsed)
            access_log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
            reset_request_id(token)


class BodySizeLimitMiddleware:
    """413 for bodies over the limit: early from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"Request body exceeds the limit of {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    response = error_response(413, self._too_large(), code="request_too_large")
                    await response(scope, receive, send)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body parsing; the handler shapes it.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counting_receive, send)


class TimedStreamingResponse(StreamingResponse):
    """A stream that gives up on a client that stops reading.

    A reader that never reads fills the socket buffers and then blocks every write forever,
    holding the turn (and its credit hold) open. Each write gets `write_timeout` seconds; when
    one times out the body iterator is closed (so its cleanup bills what was produced) and the
    connection is dropped.
    """

    def __init__(self, *args: Any, write_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_timeout = write_timeout

    async def stream_response(self, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            with anyio.fail_after(self.write_timeout):
                await send(message)

        try:
            await super().stream_response(timed_send)
        except TimeoutError:
            error_log.warning("stream_write_timeout", seconds=self.write_timeout)
            raise
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
