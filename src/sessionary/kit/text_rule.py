"""One input rule for every route: text that a database cannot store, and numbers that JSON does
not have, are a 400, up front.

PostgreSQL refuses NUL characters in text and JSON, and both engines fail on lone UTF-16
surrogates (which JSON's `\\ud800` escapes can smuggle into a Python string). Python's parser
also takes `NaN`, `Infinity` and `-Infinity`, which are not JSON (RFC 8259), and reads a number
past the float range (`1e400`) as infinity: carried on, such a value reached a model's server as
the bare word `Infinity` (a tool's schema, an output schema), which no JSON parser there
accepts, or was stored where SQLite's JSON functions refuse it. Checked per field these would
need a validator on every model; checked here, once, at the edge, no route can forget. The scan
is a byte search: bodies without a `\\u0000`, a surrogate escape, `NaN`, `Infinity`, a
three-digit exponent or 200 digits in a row pass at the cost of a few searches in C; a body
suspected of numbers only is parsed by orjson first, which refuses exactly those numbers, in C
(the words turn up in strings: a hex id holds `e100`); only a body that still looks guilty is
parsed again to name the offending field, off the event loop past `INLINE_BYTES` (naming one
in 10 MB of numbers takes seconds of Python). The rule skips only the two form types, as
FastAPI reads any other `application/*+json` body as JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
import orjson
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionary.kit.errors import error_response

_SUSPICIOUS_BODY = re.compile(rb"\\u0000|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# Bytes as digits ("0"), exponent marks ("e"), signs ("+") and the rest (" "): a number that
# can overflow a float shows as a three-digit exponent, or as 200 digits or more in a row (with
# an exponent under 100, overflow needs 210). Two C passes: a regular expression with these
# alternatives took three times as long on a 10 MB body (0.13 s), and longer still on digits.
_NUMBER_SHAPES = bytes(
    ord("0") if byte in b"0123456789" else ord("e") if byte in b"eE" else
    ord("+") if byte in b"+-" else ord(" ")
    for byte in range(256)
)  # fmt: skip
_OVERFLOWS = (b"e000", b"e+000", b"0" * 200)
# Bodies parsed for the rule's field name off the event loop past this size (a worker thread).
INLINE_BYTES = 64 << 10
# The form types FastAPI reads as forms; anything else it may read as JSON (`*/*+json`).
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotJson:
    """What a number JSON does not have parses to, so that its place can be named."""


_NOT_JSON = _NotJson()


def _number(text: str) -> float | _NotJson:
    number = float(text)
    return number if math.isfinite(number) else _NOT_JSON


def bad_text(value: str) -> bool:
    return "\x00" in value or _LONE_SURROGATE.search(value) is not None


def find_bad_text(value: Any, path: str = "") -> str | None:
    """The JSON path (`input[0].content`) of the first key or string a database cannot store."""
    return _find(value, lambda v: isinstance(v, str) and bad_text(v), path)


def _find(value: Any, bad: Callable[[Any], bool], path: str = "") -> str | None:
    """The JSON path of the first value (or key) `bad` holds true of."""
    if bad(value):
        return path or "body"
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if bad(key):
                return path or "body"
            found = _find(item, bad, here)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, bad, f"{path}[{index}]")
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


def _number_refusal(param: str) -> Any:
    return error_response(
        400,
        f"'{param}' holds NaN, Infinity or a number beyond the float range, which JSON does not "
        "carry.",
        param=param,
        code="invalid_number",
    )


def _numbers_suspected(body: bytes) -> bool:
    """Whether `body` may hold NaN, Infinity or a number past the float range (the words and
    shapes turn up in strings too: "NaN" in a text, "3e100f" in a hex id)."""
    if b"NaN" in body or b"Infinity" in body:
        return True
    shapes = body.translate(_NUMBER_SHAPES)
    return any(shape in shapes for shape in _OVERFLOWS)


def _body_problem(body: bytes) -> tuple[str, str] | None:
    """("text" or "number", the JSON path) of what the rule refuses in `body`, or None. Parsed
    only when the byte scan finds something suspicious; a body that is not JSON is left to its
    route ("not valid JSON")."""
    texts, numbers = _SUSPICIOUS_BODY.search(body), _numbers_suspected(body)
    if not texts and not numbers:
        return None
    if not texts:
        # The words and exponents turn up in strings too (hex ids: "3e100f"); orjson, which
        # refuses exactly the numbers this rule refuses, clears such a body in C.
        try:
            orjson.loads(body)
            return None
        except orjson.JSONDecodeError:
            pass  # where, or not JSON at all, or nested past orjson's depth: the json module
    try:
        parsed = json.loads(body, parse_constant=_number, parse_float=_number)
    except ValueError:
        return None
    except RecursionError:  # nested past any sane depth: a NUL somewhere refused, else the route
        return ("text", "body") if texts else None
    if texts:
        param = find_bad_text(parsed)
        if param is not None:
            return "text", param
    if numbers:
        param = _find(parsed, lambda v: v is _NOT_JSON)
        if param is not None:
            return "number", param
    return None


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
    """400 for NUL characters or lone surrogates anywhere in the path, query or JSON body, and
    for numbers JSON does not have in the body."""

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
        media_type = content_type.split(";", 1)[0].strip().lower()
        if scope["method"] not in ("POST", "PUT", "PATCH") or media_type in _FORMS:
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
        refused = (
            _body_problem(body)
            if len(body) <= INLINE_BYTES
            else await anyio.to_thread.run_sync(_body_problem, body)
        )
        if refused is not None:
            kind, param = refused
            refusal = _refusal if kind == "text" else _number_refusal
            await refusal(param)(scope, receive, send)
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
