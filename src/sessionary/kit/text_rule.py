"""One input rule for every route: text that a database cannot store is a 400, up front.

PostgreSQL refuses NUL characters in text and JSON, and both engines fail on lone UTF-16
surrogates (which JSON's `\\ud800` escapes can smuggle into a Python string). Checked per field
these would need a validator on every model; checked here, once, at the edge, no route can
forget. The scan is a byte search: bodies without a `\\u0000` or a surrogate escape pass at the
cost of two `in` tests; only suspicious bodies are parsed to name the offending field.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionary.kit.errors import error_response

_SUSPICIOUS_BODY = re.compile(rb"\\u0000|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def bad_text(value: str) -> bool:
    return "\x00" in value or _LONE_SURROGATE.search(value) is not None


def find_bad_text(value: Any, path: str = "") -> str | None:
    """The JSON path (`input[0].content`) of the first key or string a database cannot store."""
    if isinstance(value, str):
        return path or "body" if bad_text(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if bad_text(key):
                return path or "body"
            found = find_bad_text(item, here)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_bad_text(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _utf16_or_32(body: bytes) -> bool:
    """UTF-16 or UTF-32 JSON: a byte-order mark, or a NUL byte among the first four (JSON text
    starts with an ASCII character, which these encodings pad with zero bytes)."""
    head = body[:4]
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 2 and 0 in head)


def _refusal(param: str) -> Any:
    return error_response(
        400,
        f"'{param}' holds a NUL character or an unpaired surrogate, which cannot be stored.",
        param=param,
        code="invalid_text",
    )


def _query_problem(scope: Scope) -> str | None:
    path = scope.get("path", "")
    if bad_text(path) or bad_text(unquote(scope.get("raw_path", b"").decode("latin-1"))):
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query or "\x00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if bad_text(name) or bad_text(value):
                return name if not bad_text(name) else "query"
        return "query"
    return None


class TextRuleMiddleware:
    """400 for NUL characters or lone surrogates anywhere in the path, query or JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _query_problem(scope)
        if problem is not None:
            await _refusal(problem)(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type", "")
        if scope["method"] not in ("POST", "PUT", "PATCH") or content_type.startswith(
            ("multipart/", "application/x-www-form-urlencoded")
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the size limit, raised while the body streamed in
            await error_response(exc.status_code, str(exc.detail))(scope, receive, send)
            return
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if _utf16_or_32(body):
            # JSON is exchanged in UTF-8 (RFC 8259); Python would also decode UTF-16/32, where
            # this byte scan could not see what they hide.
            await error_response(
                400, "JSON bodies must be encoded in UTF-8.", code="invalid_encoding"
            )(scope, receive, send)
            return
        if _SUSPICIOUS_BODY.search(body):
            try:
                parsed = json.loads(body)
                param = find_bad_text(parsed)
            except ValueError:
                param = None  # the route answers its own "not valid JSON"
            except RecursionError:
                param = "body"  # nested past any sane depth, and holding a NUL somewhere
            if param is not None:
                await _refusal(param)(scope, receive, send)
                return
        replay = {"type": "http.request", "body": body, "more_body": False}
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                if messages and messages[-1]["type"] == "http.disconnect":
                    return messages[-1]
                return replay
            return await receive()

        await self.app(scope, replay_receive, send)
