"""ASGI middleware applying `Idempotency-Key` to every POST.

It sits inside the body-size limit and outside the routes: it reads the body once to fingerprint
it, hands the same bytes to the route, and captures the answer on its way out.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionary.billing.idempotency import (
    Claim,
    IdempotencyService,
    StoredAnswer,
    fingerprint,
    stream_succeeded,
)
from sessionary.kit.db import Database
from sessionary.kit.errors import error_response

log = structlog.get_logger("sessionary.idempotency")

HEADER = "idempotency-key"
_NOT_REPLAYED = {"date", "server", "content-length", "x-request-id", "transfer-encoding"}
_PURGE_EVERY_SECONDS = 60.0


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        database: Database,
        caller_scope: Callable[[Headers], str | None],
        retention: timedelta,
        lease: timedelta,
        wait_seconds: float,
    ) -> None:
        self.app = app
        self.database = database
        self.caller_scope = caller_scope
        self.retention = retention
        self.lease = lease
        self.wait_seconds = wait_seconds
        self._last_purge = 0.0

    def _service_call(self, method: str, *args: Any) -> Any:
        with self.database.session() as db:
            service = IdempotencyService(db, retention=self.retention, lease=self.lease)
            return getattr(service, method)(*args)

    async def _call(self, method: str, *args: Any) -> Any:
        return await self.database.in_worker(lambda: self._service_call(method, *args))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            await self.app(scope, receive, send)
            return
        if not (1 <= len(key) <= 255) or not key.isascii() or not key.isprintable():
            response = error_response(
                400,
                "Idempotency-Key must be 1 to 255 printable ASCII characters.",
                param="Idempotency-Key",
                code="invalid_idempotency_key",
            )
            await response(scope, receive, send)
            return
        caller = await self.database.in_worker(lambda: self.caller_scope(headers))
        if caller is None:  # unauthenticated: the route answers 401, nothing to remember
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except HTTPException as exc:
            await error_response(exc.status_code, str(exc.detail))(scope, receive, send)
            return
        owner = hashlib.sha256(caller.encode()).hexdigest()
        path = scope["path"].removeprefix("/api")
        print_ = fingerprint(scope["method"], path, scope.get("query_string", b"").decode(), body)
        await self._maybe_purge()

        claim: Claim = await self._call("claim", owner, key, print_)
        deadline = time.monotonic() + self.wait_seconds
        while claim.outcome == "in_flight" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            claim = await self._call("claim", owner, key, print_)
        if claim.outcome != "proceed":
            await self._refuse_or_replay(claim, scope, receive, send)
            return
        await self._run_and_remember(scope, receive, send, body, owner, key)

    async def _refuse_or_replay(
        self, claim: Claim, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if claim.outcome == "mismatch":
            response: Response = error_response(
                422,
                "This Idempotency-Key was already used with a different request body or path.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        elif claim.outcome == "in_flight":
            response = error_response(
                409,
                "A request with this Idempotency-Key is still in progress; retry later.",
                param="Idempotency-Key",
                code="idempotency_in_progress",
                headers={"Retry-After": "1"},
            )
        else:
            assert claim.answer is not None
            response = Response(
                claim.answer.body,
                status_code=claim.answer.status,
                headers={**claim.answer.headers, "idempotent-replayed": "true"},
            )
        await response(scope, receive, send)

    async def _run_and_remember(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, owner: str, key: str
    ) -> None:
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real stream: a disconnect must still be seen

        status = 500
        kept_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        finished = False

        async def capture(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    decoded = name.decode("latin-1").lower()
                    if decoded not in _NOT_REPLAYED:
                        kept_headers[decoded] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                finished = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            body = b"".join(chunks)
            streamed = kept_headers.get("content-type", "").startswith("text/event-stream")
            if finished and 200 <= status < 300 and (not streamed or stream_succeeded(body)):
                answer = StoredAnswer(status, kept_headers, body)
                await self._settle_record("complete", owner, key, answer)
            else:
                await self._settle_record("release", owner, key)

    async def _settle_record(self, method: str, *args: Any) -> None:
        try:
            await self._call(method, *args)
        except Exception:  # the lease expires and a retry can run again
            log.exception("idempotency_record_update_failed", method=method)

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY_SECONDS:
            return
        self._last_purge = now
        try:
            await self._call("purge_expired")
        except Exception:
            log.warning("idempotency_purge_failed", exc_info=True)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)
