"""Keep-alive HTTP/1.1 POSTs to a model server over plain `http://`, on asyncio's transports.

A non-streamed turn makes one POST to its model server. Through aiohttp's client that POST cost
about 150 µs of the server's CPU and 140 µs of latency over the wire's own (2,000 POSTs to the
benchmark's stub, on loopback); written as one request on a kept connection and parsed by
httptools (llhttp, the parser uvicorn uses), 25 µs. For a model server on the same machine or
network, which is where a gateway's own latency shows, that was 8% of a completion turn.

Only what such a POST needs: a pool of kept connections per event loop, the request written at
once, the response parsed (lengths, chunks, a body ended by closing the connection), answers
over a size limit refused while they arrive, a refusal (status 300 and up) answered as soon as
its head is in, as aiohttp's client answers it. A connection is used for one exchange at a time
and kept only when that exchange ended cleanly: never after an error, a cancelled wait, a
refusal, `Connection: close`, or any byte past the answer (a server that answers twice would
otherwise hand one request's answer to the next). Bytes past the answer that come only after
the connection carried the next request cannot be told from that request's answer (by this
client or any other that keeps connections), so kept connections are never shared between
parties (`post(party=...)`: whoever the answer is for, an account or an external user): a
server that answers twice can at worst hand a party its own earlier answer, never another's
(`tests/test_plain_http.py -k parties`). Kept connections idle for `IDLE_S` are closed
rather than used (servers close idle connections, uvicorn after 5 s, and a request sent as one
closes would fail). `JsonPoster` uses this only for `http://` URLs without a proxy or
credentials, whose host, path and headers are plain ASCII with nothing to normalise; TLS,
proxies and anything else stay with aiohttp (`tests/test_plain_http.py`).
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections import deque
from urllib.parse import urlsplit

import httptools

from sessionary.kit.per_loop import PerLoop

# A kept connection idle this long is closed rather than used: below uvicorn's 5 s keep-alive.
IDLE_S = 4.0
# An answer's status line and headers; aiohttp refuses a header line past 8 KiB.
HEAD_LIMIT = 64 << 10
# Bytes on the wire for one answer besides its body: its head, trailers (which the parser holds
# until each field ends, growing its copy at every read: one endless field is stopped here),
# and chunk lines, of which each chunk may have `CHUNK_LINES` more.
FRAMING_LIMIT = 1 << 20
CHUNK_LINES = 32
# gzip members in one answer (50,000 empty ones held the loop for seconds), inflated from
# pieces of `INFLATE_STEP` bytes: what a member leaves over is never more than one piece
MAX_MEMBERS = 16
INFLATE_STEP = 1 << 16
# A base URL's path (and query) sent as it is: nothing that a client would encode or normalise.
_SAFE = r"A-Za-z0-9\-_.~!$&'()*+,;=:@"
_PLAIN_TARGET = re.compile(rf"(?:/[{_SAFE}]*)*(?:\?[{_SAFE}/?]*)?")
_DOT_SEGMENT = re.compile(r"/\.\.?(?:/|\?|$)")
_VALUE_OK = frozenset(range(0x20, 0x7F))
_NAME_OK = frozenset(range(0x21, 0x7F)) - frozenset(b'"(),/:;<=>?@[\\]{}')

Answer = tuple[int, dict[str, str], bytes]


def succeeded(status: int) -> bool:
    """Whether an answer's status is a success: 2xx only (a final 0xx or 1xx is none)."""
    return 200 <= status < 300


class Failed(ConnectionError):
    """The connection broke, or the server answered something that is not HTTP/1.1."""


class TooLarge(Exception):
    """The answer went past the caller's size limit while it arrived."""


class _Connection(asyncio.Protocol):
    """One kept connection: one exchange at a time, its answer parsed as it arrives."""

    def __init__(self, answer: asyncio.Future[Answer], limit: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        # a new connection's first answer is awaited from the start: uvloop may deliver a
        # server's early bytes (a 503 as it accepts) before `create_connection` returns
        self.expect(answer, limit)

    def expect(self, answer: asyncio.Future[Answer], limit: int) -> None:
        """The next exchange: its answer is `answer`, refused past `limit` bytes of body;
        nothing of the last exchange's answer carries over."""
        self.answer: asyncio.Future[Answer] | None = answer
        self.limit = limit
        self.wire = 0  # bytes of this exchange's answer, framing included
        self.chunks = 0
        self._clear_message()

    def _clear_message(self) -> None:
        """What one message of the answer gathers (an interim 1xx answer has its own)."""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.headers_done = False
        self.keep_alive = False
        self.trailers = 0

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self._fail(Failed("bytes from the server with no request waiting"))
            return
        self.wire += len(data)
        if self.wire - len(self.body) > FRAMING_LIMIT + CHUNK_LINES * self.chunks:
            self._fail(Failed(f"an answer's framing and trailers over {FRAMING_LIMIT >> 20} MiB"))
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            self._fail(Failed(f"not an HTTP/1.1 answer: {error!r}"))
            return
        if not self.headers_done and self.wire > HEAD_LIMIT:  # the parser keeps the head
            self._fail(Failed(f"an answer's head over {HEAD_LIMIT >> 10} KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiting = self.answer
        if waiting is None or waiting.done():
            return
        codings = self.headers.get("transfer-encoding", "")
        ends_at_close = (
            self.headers_done
            and "content-length" not in self.headers
            and codings.rsplit(",", 1)[-1].strip().lower() != "chunked"
        )
        if ends_at_close:  # a body without a length ends when the connection does
            self._done()
        else:
            waiting.set_exception(Failed("the server closed the connection mid-answer"))

    # httptools' side
    def on_message_begin(self) -> None:
        if self.answer is None or self.answer.done():  # a second answer to one request
            self._fail(Failed("an answer nobody asked for"))
        self._clear_message()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            return
        # trailers, after a chunked body: not the answer's head, and as short as a head
        self.trailers += len(name) + len(value)
        if self.trailers > HEAD_LIMIT:
            self._fail(Failed(f"an answer's trailers over {HEAD_LIMIT >> 10} KiB"))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # asked here: once the message is complete the parser no longer knows
        self.keep_alive = self.parser.should_keep_alive()
        status = self.parser.get_status_code()
        # a refusal (or no status at all): its head says it all, the body is left unread; a
        # 1xx is an interim answer, the real one follows (`on_message_complete`)
        if status >= 300 or status < 100:
            self._done()
            self.close()

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self.limit:
            self._fail(TooLarge())

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            self.headers_done = False  # an interim answer (100 Continue): the real one follows
            return
        self._done()

    # ours
    def _done(self) -> None:
        answer = self.answer
        if answer is None or answer.done():
            self.close()
            return
        answer.set_result((self.parser.get_status_code(), self.headers, bytes(self.body)))
        self.body = bytearray()

    def _fail(self, error: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()


class Origin:
    """Kept connections to one `http://host:port`, one pool per event loop (`kit/per_loop.py`:
    a transport belongs to the loop that made it, and a short-lived loop's close with it)."""

    def __init__(self, host: str, port: int, head: bytes) -> None:
        self.host, self.port, self.head = host, port, head
        self._pools: PerLoop[_Pools] = PerLoop(_Pools, _close_all)

    @classmethod
    def of(cls, url: str, headers: dict[str, str]) -> tuple[Origin, str] | None:
        """The origin of `url` and the start of its request targets, when this client can
        serve it: plain `http://` to an ASCII host, no credentials, a path and query with
        nothing a client would encode or normalise, header names and values of plain printable
        ASCII. None: use a full client."""
        try:
            parts = urlsplit(url)
            port = 80 if parts.port is None else parts.port
        except ValueError:
            return None
        host = parts.hostname
        if parts.scheme.lower() != "http" or not host or port == 0:
            return None
        if "@" in parts.netloc or not _plain(parts.netloc, _VALUE_OK) or " " in parts.netloc:
            return None
        target = url.split("://", 1)[1][len(parts.netloc) :]
        if parts.fragment or target[:1] == "?" or not _PLAIN_TARGET.fullmatch(target):
            return None
        if _DOT_SEGMENT.search(target):
            return None
        authority = f"[{host}]" if ":" in host else host
        lines = [f"Host: {authority}" + (f":{port}" if port != 80 else "")]
        lines.append("Accept-Encoding: gzip, deflate")
        for name, value in headers.items():
            if not (name and _plain(name, _NAME_OK) and _plain(value, _VALUE_OK)):
                return None
            lines.append(f"{name}: {value}")
        head = "\r\n".join(lines).encode("ascii") + b"\r\nContent-Length: "
        return cls(host, port, head), target

    async def post(self, target: str, body: bytes, limit: int, party: str = "") -> Answer:
        """(status, headers with lower-case names, body) of a POST of `body` to `target` for
        `party`, on a connection only `party` uses; a refusal (any status but 2xx) with no body.
        Raises `Failed` (or an `OSError`) when no answer came, `TooLarge` past `limit` bytes of
        body."""
        pools = await self._pools.get()
        pools.sweep()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        connection = self._kept(pools.get(party))
        if connection is None:
            _, connection = await loop.create_connection(
                lambda: _Connection(answer, limit), self.host, self.port
            )
        else:
            connection.expect(answer, limit)
        request = b"POST %s HTTP/1.1\r\n%s%d\r\n\r\n" % (target.encode(), self.head, len(body))
        try:
            assert connection.transport is not None
            if not answer.done():  # an early answer (or failure) needs no request
                connection.transport.write(request + body)
            status, headers, content = await answer
        except BaseException:
            connection.close()  # an answer may still be on its way: never reuse it
            raise
        connection.answer = None
        if connection.keep_alive and connection.reusable():
            connection.idle_since = time.monotonic()
            pools.setdefault(party, deque()).append(connection)
        else:
            connection.close()
        if not succeeded(status):
            return status, headers, b""
        return status, headers, _decoded(headers.get("content-encoding", ""), content, limit)

    @staticmethod
    def _kept(idle: deque[_Connection] | None) -> _Connection | None:
        """The most recently used of a party's kept connections that may still be used; those
        idle too long, the oldest first, are closed on the way (after a burst, all but a few)."""
        now = time.monotonic()
        while idle and now - idle[0].idle_since >= IDLE_S:
            idle.popleft().close()
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    async def aclose(self) -> None:
        """Close this loop's kept connections."""
        await self._pools.aclose()


class _Pools(dict[str, deque[_Connection]]):
    """One event loop's kept connections, by party."""

    swept_at = 0.0

    def sweep(self) -> None:
        """Every `IDLE_S` / 4 at most: close every party's connections idle for `IDLE_S`, and
        forget the parties left with none (one that never posts again keeps nothing open)."""
        now = time.monotonic()
        if now - self.swept_at < IDLE_S / 4:
            return
        self.swept_at = now
        for party, idle in list(self.items()):
            while idle and now - idle[0].idle_since >= IDLE_S:
                idle.popleft().close()
            if not idle:
                del self[party]


async def _close_all(pools: _Pools) -> None:
    for idle in pools.values():
        while idle:
            idle.pop().close()
    pools.clear()


def _plain(text: str, allowed: frozenset[int]) -> bool:
    return text.isascii() and all(ord(c) in allowed for c in text)


def _decoded(coding: str, content: bytes, limit: int) -> bytes:
    """The body with its content coding undone (gzip, as one member or a few, or deflate, with
    zlib's header or without), refused past `limit` bytes once inflated, and when cut short or
    followed by other bytes. An empty body is empty whatever its coding says. Another coding is
    a failure: nothing asked for it. Fed in pieces, so no copy is longer than one piece."""
    coding = coding.strip().lower()
    if coding in ("", "identity") or not content:
        return content
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise Failed(f"an answer in content coding {coding!r}")
    # deflate: the standard's (zlib's header), or raw as many servers send it
    wbits = (15 if content[:1] == b"x" else -15) if coding == "deflate" else 31
    inflater = zlib.decompressobj(wbits)
    inflated = bytearray()
    pieces = memoryview(content)
    members, at, left = 1, 0, b""
    piece: bytes | memoryview
    while left or at < len(content):
        if left:
            piece, left = left, b""
        else:
            piece, at = pieces[at : at + INFLATE_STEP], at + INFLATE_STEP
        try:
            inflated += inflater.decompress(piece, limit + 1 - len(inflated))
        except zlib.error as error:
            raise Failed(f"an answer that does not inflate: {error}") from error
        if len(inflated) > limit:
            raise TooLarge()
        if inflater.eof and (inflater.unused_data or at < len(content)):
            members += 1  # gzip may have more members (anything else fails to inflate)
            if wbits != 31 or members > MAX_MEMBERS:
                raise Failed("bytes after a compressed answer")
            left = inflater.unused_data
            inflater = zlib.decompressobj(wbits)
    if not inflater.eof:
        raise Failed("a compressed answer cut short")
    return bytes(inflated)
