"""The kept plain-http connections to a model server (providers/plain_http.py), through
`JsonPoster`, against a loopback server whose bytes each test writes itself: connections are
reused and never after anything unusual, every way an HTTP/1.1 answer may end is read, sizes are
limited as the body arrives (inflated too), and what this client does not serve goes to aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from sessionary.kit.errors import UpstreamError, UpstreamTimeout
from sessionary.providers import json_post, plain_http
from sessionary.providers.json_post import JsonPoster
from sessionary.providers.plain_http import Origin

# answer(n, request body) -> the bytes to write back (None: close without answering)
Script = Callable[[int, bytes], Awaitable[bytes | None]]
OK = b'{"ok": %d}'


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


class Upstream:
    """A loopback server that reads whole requests and answers what `script` says (closing the
    connection after `Connection: close` or HTTP/1.0, as a server would); it counts the
    connections it accepted and the requests it read."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.open: set[asyncio.StreamWriter] = set()
        self.then = b""
        self.greeting = b""  # written as soon as a connection is accepted

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        for writer in list(self.open):
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.add(writer)
        try:
            if self.greeting:
                writer.write(self.greeting)
                await writer.drain()
                return
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                reply = await self.script(len(self.requests), body)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.then:  # more bytes, later, that no request asked for
                    await asyncio.sleep(0.05)
                    writer.write(self.then)
                said = reply.partition(b"\r\n\r\n")[0].lower()
                if b"connection: close" in said or said.startswith(b"http/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()


def run(
    script: Script,
    posts: int = 1,
    *,
    max_retries: int = 0,
    timeout: float = 5.0,
    then: bytes = b"",
    pause: float = 0.0,
    aiohttp_client: bool = False,
    parties: tuple[str, ...] = (),
) -> tuple[list[Any], Upstream]:
    """`posts` POSTs in a row through one JsonPoster to an `Upstream` running `script` (and
    writing `then` after each answer), `pause` seconds apart: (each answer or raised error, the
    upstream). Through aiohttp's client instead of this one when `aiohttp_client`; the n-th POST
    for `parties[n]` when given."""
    upstream = Upstream(script)
    upstream.then = then

    async def main() -> list[Any]:
        url = await upstream.start()
        poster = JsonPoster(url, "sk-up", timeout, max_retries, "openai (test)")
        if aiohttp_client:
            poster.plain = None
        assert (poster.plain is None) == aiohttp_client  # the client under test
        outcomes: list[Any] = []
        for n in range(posts):
            await asyncio.sleep(pause if n else 0)
            try:
                party = parties[n] if parties else ""
                outcomes.append(await poster.post("/answer", {"n": n}, party=party))
            except Exception as exc:  # the test looks at it
                outcomes.append(exc)
        await poster.aclose()
        await upstream.stop()
        return outcomes

    return asyncio.run(main()), upstream


async def numbered(n: int, _body: bytes) -> bytes:
    return answer(OK % n, "Content-Type: application/json")


def test_posts_reuse_one_kept_connection_and_send_the_request_whole() -> None:
    outcomes, upstream = run(numbered, posts=5)
    assert outcomes == [{"ok": n} for n in range(1, 6)]
    assert upstream.connections == 1
    head, _, body = upstream.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/answer HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sk-up" in head
    assert json.loads(body) == {"n": 0}


def test_connection_close_and_http_1_0_answers_are_not_reused() -> None:
    async def closing(n: int, _body: bytes) -> bytes:
        if n % 2:
            return answer(OK % n, "Connection: close")
        return b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n" + OK % n

    outcomes, upstream = run(closing, posts=4)
    assert outcomes == [{"ok": n} for n in range(1, 5)]
    assert upstream.connections == 4


def test_chunked_answers_and_answers_ended_by_closing_are_read_whole() -> None:
    async def framed(n: int, _body: bytes) -> bytes:
        if n == 1:
            chunks = b'4\r\n{"ok\r\n5\r\n": 1}\r\n0\r\n\r\n'
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + OK % n  # no length: EOF ends it

    outcomes, upstream = run(framed, posts=2)
    assert outcomes == [{"ok": 1}, {"ok": 2}]
    assert upstream.connections == 1


def test_trailers_are_not_the_answers_head_and_cannot_fill_the_memory() -> None:
    """A chunked answer's trailers neither override its head (a `Content-Encoding: br` there
    would make a good answer unreadable) nor grow without bound (they once held 1.9 GB for one
    turn): past `HEAD_LIMIT` of fields, or one field past what the body's limit leaves
    (`FRAMING_LIMIT`, whatever the body's limit leaves), the answer is refused while it
    arrives."""
    many = b"".join(b"X-T%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))  # 100 KB
    endless = b"X-T: " + b"a" * (3 << 20)  # one field that goes on (the server then waits)

    async def trailing(n: int, _body: bytes) -> bytes:
        body = OK % n
        trailers = {1: b"Content-Encoding: br\r\n", 2: many, 3: endless}[n]
        chunked = b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailers)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked

    outcomes, _ = run(trailing, posts=3, timeout=3.0)
    assert outcomes[0] == {"ok": 1}
    for refused in outcomes[1:]:
        assert isinstance(refused, UpstreamError) and "no readable answer" in refused.message


def test_a_refusal_is_answered_from_its_head_without_waiting_for_or_reading_its_body() -> None:
    """As aiohttp's client answers it: a 503 whose body never ends is a 503 at once (not a
    504 after the timeout), and a 400 whose body does not inflate is still a 400, not retried."""

    async def refusing(n: int, _body: bytes) -> bytes:
        if n == 1:
            return b'HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\n{"err'  # and no more
        return answer(b"not gzip", "Content-Encoding: gzip", status="400 Bad Request")

    outcomes, upstream = run(refusing, posts=2, timeout=3.0)
    assert isinstance(outcomes[0], UpstreamError) and "HTTP 503" in outcomes[0].message
    assert isinstance(outcomes[1], UpstreamError) and "HTTP 400" in outcomes[1].message
    assert len(upstream.requests) == 2 and upstream.connections == 2  # never kept


def test_a_body_in_small_chunks_is_read_whole() -> None:
    """Chunk lines count against `FRAMING_LIMIT` only beyond `CHUNK_LINES` a chunk: 2 MB in
    8-byte chunks is 1.25 MB of them."""
    text = b"a" * (2 << 20)
    body = b'{"text": "' + text + b'"}'
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 8]), body[i : i + 8]) for i in range(0, len(body), 8)
    )

    async def small(_n: int, _body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"

    outcomes, _ = run(small)
    assert outcomes == [{"text": text.decode()}]


def test_odd_but_lawful_framings_read_as_aiohttp_reads_them() -> None:
    """`Transfer-Encoding: xchunked` is not chunked (the body ends at close); a 204 has no body,
    whatever `Content-Encoding` says (not JSON: a 502 not retried, not a connection failure)."""

    async def odd(n: int, _body: bytes) -> bytes:
        if n == 1:
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n"
                + OK % 1
            )
        return b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"

    outcomes, upstream = run(odd, posts=2, max_retries=1)
    assert outcomes[0] == {"ok": 1}
    assert isinstance(outcomes[1], UpstreamError) and "not a JSON object" in outcomes[1].message
    assert len(upstream.requests) == 2


def test_a_connection_closed_unanswered_is_a_failure_not_the_last_answer_again() -> None:
    """A 204 (no length, no body) keeps its connection; when the server then closes it without
    answering the next POST, that POST failed: it does not get the 204's status and headers."""

    async def then_silence(n: int, _body: bytes) -> bytes | None:
        return b"HTTP/1.1 204 No Content\r\nX-From: 1\r\n\r\n" if n == 1 else None

    outcomes, _ = run(then_silence, posts=2)
    assert isinstance(outcomes[0], UpstreamError) and "not a JSON object" in outcomes[0].message
    assert isinstance(outcomes[1], UpstreamError) and "no readable answer" in outcomes[1].message


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_answer_sent_before_the_request_is_the_answer(loop: str) -> None:
    """A server that refuses as it accepts (a 503 before reading anything), while the loop is
    busy as a loaded server's is: uvloop delivered those bytes before `create_connection`
    returned, and they were dropped as unasked for (a retried "could not connect")."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse_all() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted, _ = listener.accept()
                accepted.sendall(answer(b"busy", "Connection: close", status="503 Busy"))
                accepted.close()

    threading.Thread(target=refuse_all, daemon=True).start()

    async def main() -> list[Any]:
        async def busy() -> None:
            while True:
                time.sleep(0.002)
                await asyncio.sleep(0)

        poster = JsonPoster(f"http://127.0.0.1:{port}/v1", None, 3.0, 0, "openai (test)")
        busying = asyncio.create_task(busy())
        outcomes = await asyncio.gather(
            *(poster.post("/answer", {}) for _ in range(40)), return_exceptions=True
        )
        busying.cancel()
        await poster.aclose()
        return outcomes

    try:
        outcomes = uvloop.run(main()) if loop == "uvloop" else asyncio.run(main())
    finally:
        listener.close()
    for outcome in outcomes:
        assert isinstance(outcome, UpstreamError) and "HTTP 503" in outcome.message


def test_a_truncated_answer_is_a_failure_not_a_short_body() -> None:
    async def cut(_n: int, _body: bytes) -> bytes:
        return b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"ok": 1}'

    outcomes, _ = run(cut)
    assert isinstance(outcomes[0], UpstreamError) and "no readable answer" in outcomes[0].message


def test_gzip_and_deflate_answers_are_inflated() -> None:
    async def packed(n: int, _body: bytes) -> bytes:
        raw = OK % n
        packed = {
            1: gzip.compress(raw),
            2: zlib.compress(raw),
            3: zlib.compress(raw)[2:-4],  # raw deflate, as many servers send it
            4: gzip.compress(raw[:3]) + gzip.compress(raw[3:]),  # two gzip members
        }[n]
        coding = "deflate" if n in (2, 3) else "gzip"
        return answer(packed, f"Content-Encoding: {coding}")

    outcomes, upstream = run(packed, posts=4)
    assert outcomes == [{"ok": 1}, {"ok": 2}, {"ok": 3}, {"ok": 4}]
    assert b"Accept-Encoding: gzip, deflate" in upstream.requests[0]


@pytest.mark.parametrize(
    "packed",
    [
        gzip.compress(OK % 1) + b"garbage",
        zlib.compress(OK % 1) + zlib.compress(OK % 2),
        gzip.compress(OK % 1)[:-6],
        gzip.compress(OK % 1) + gzip.compress(b"") * 50_000,  # 1 MB; held the loop 0.8 s
    ],
    ids=["bytes after gzip", "a second deflate stream", "cut short", "endless members"],
)
def test_a_compressed_answer_with_bytes_after_it_or_cut_short_is_a_502(packed: bytes) -> None:
    coding = "deflate" if packed[:1] == b"x" else "gzip"

    async def odd(_n: int, _body: bytes) -> bytes:
        return answer(packed, f"Content-Encoding: {coding}")

    outcomes, _ = run(odd)
    assert isinstance(outcomes[0], UpstreamError)
    assert "no readable answer" in outcomes[0].message  # refused as it inflates, not parsed


def test_an_unknown_content_coding_is_a_502() -> None:
    async def brotli(_n: int, _body: bytes) -> bytes:
        return answer(b"\x1b\x00", "Content-Encoding: br")

    outcomes, _ = run(brotli)
    assert isinstance(outcomes[0], UpstreamError) and outcomes[0].status_code == 502


def test_sizes_are_limited_as_answers_arrive_and_once_inflated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(json_post, "MAX_ANSWER_BYTES", 1 << 20)
    bomb = gzip.compress(b'{"x": "' + b"a" * (8 << 20) + b'"}')  # 8 KiB that inflate to 8 MiB
    assert len(bomb) < 64 << 10

    async def large(n: int, _body: bytes) -> bytes:
        if n == 1:
            return answer(b'{"x": "' + b"a" * (2 << 20) + b'"}')
        return answer(bomb, "Content-Encoding: gzip")

    outcomes, _ = run(large, posts=2)
    for outcome in outcomes:
        assert isinstance(outcome, UpstreamError) and "over 1 MiB" in outcome.message


def test_an_answer_that_came_too_late_is_never_read_as_the_next_ones() -> None:
    """The first answer is late: the poster gives up on it (504). The second POST must get its
    own answer, not the late first one, which the abandoned connection carried."""

    async def late_first(n: int, _body: bytes) -> bytes:
        if n == 1:
            await asyncio.sleep(0.5)
        return answer(OK % n)

    outcomes, upstream = run(late_first, posts=2, timeout=0.2)
    assert isinstance(outcomes[0], UpstreamTimeout)
    assert outcomes[1] == {"ok": 2}
    assert upstream.connections == 2


def test_the_start_of_an_answer_nobody_asked_for_is_never_finished_by_the_next_one() -> None:
    """The first answer comes with the head and half the body of another: were the connection
    kept, the next POST would read that stale answer's end as its own, and every later one the
    answer before it."""

    async def and_a_half(n: int, _body: bytes) -> bytes:
        stale = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b'{"ok": "stale'
        return answer(OK % n) + (stale if n == 1 else b"")

    outcomes, upstream = run(and_a_half, posts=3)
    assert outcomes == [{"ok": 1}, {"ok": 2}, {"ok": 3}]
    assert upstream.connections == 2


@pytest.mark.parametrize("later", [False, True])
def test_a_second_answer_to_one_request_is_never_read_as_the_next_ones(later: bool) -> None:
    """A server that answers twice, in the same write or 50 ms later, while the connection is
    idle: the connection is dropped, and the next POST gets its own answer on a new one."""

    async def twice(n: int, _body: bytes) -> bytes:
        return answer(OK % n) + (b"" if later else answer(OK % 99))

    outcomes, upstream = run(twice, posts=2, then=answer(OK % 99) if later else b"", pause=0.2)
    assert outcomes == [{"ok": 1}, {"ok": 2}]
    assert upstream.connections == 2


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    """With no retries allowed, the second POST succeeds only if it did not go out on the
    connection the server closed after the first answer (without saying so)."""

    async def then_close(n: int, _body: bytes) -> bytes | None:
        return answer(OK % n)

    upstream = Upstream(then_close)

    async def main() -> list[Any]:
        url = await upstream.start()
        poster = JsonPoster(url, None, 5.0, 0, "openai (test)")
        first = await poster.post("/answer", {})
        for writer in list(upstream.open):  # the server drops the idle connection
            writer.close()
        await asyncio.sleep(0.05)
        second = await poster.post("/answer", {})
        await poster.aclose()
        await upstream.stop()
        return [first, second]

    assert asyncio.run(main()) == [{"ok": 1}, {"ok": 2}]
    assert upstream.connections == 2


def test_connections_kept_after_a_burst_close_once_idle_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool takes the most recently used first, so the rest of a burst's connections would
    never be looked at again: those idle past `IDLE_S` close at the next POST."""
    monkeypatch.setattr(plain_http, "IDLE_S", 0.2)
    upstream = Upstream(numbered)

    async def main() -> tuple[int, int]:
        url = await upstream.start()
        poster = JsonPoster(url, None, 5.0, 0, "openai (test)")
        await asyncio.gather(*(poster.post("/answer", {}) for _ in range(6)))
        burst = len(upstream.open)
        await asyncio.sleep(0.3)
        await poster.post("/answer", {})
        await asyncio.sleep(0.05)  # the server sees the others closed
        after = len(upstream.open)
        await poster.aclose()
        await upstream.stop()
        return burst, after

    burst, after = asyncio.run(main())
    assert burst == 6 and after == 1


def test_a_party_that_posts_no_more_keeps_nothing_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another party's POST closes the connections of parties idle past `IDLE_S`."""
    monkeypatch.setattr(plain_http, "IDLE_S", 0.2)
    upstream = Upstream(numbered)

    async def main() -> tuple[int, int, list[str]]:
        url = await upstream.start()
        poster = JsonPoster(url, None, 5.0, 0, "openai (test)")
        await asyncio.gather(*(poster.post("/answer", {}, party=p) for p in "abc"))
        before = len(upstream.open)
        await asyncio.sleep(0.3)
        await poster.post("/answer", {}, party="d")
        await asyncio.sleep(0.05)  # the server sees the others closed
        assert poster.plain is not None
        (pools,) = poster.plain[0]._pools.held()
        kept = sorted(pools)
        after = len(upstream.open)
        await poster.aclose()
        await upstream.stop()
        return before, after, kept

    before, after, kept = asyncio.run(main())
    assert before == 3 and after == 1 and kept == ["d"]


def test_a_connection_idle_past_the_limit_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed instead, before a server's keep-alive ends it as a request goes out."""
    monkeypatch.setattr(plain_http, "IDLE_S", 0.05)
    outcomes, upstream = run(numbered, posts=3, pause=0.1)
    assert outcomes == [{"ok": 1}, {"ok": 2}, {"ok": 3}]
    assert upstream.connections == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * (100 << 10),  # a head that never ends
        None,
    ],
)
def test_what_is_not_an_http_answer_is_a_502_after_the_retries(reply: bytes | None) -> None:
    async def odd(_n: int, _body: bytes) -> bytes | None:
        return reply

    outcomes, upstream = run(odd, max_retries=1)
    assert isinstance(outcomes[0], UpstreamError) and "no readable answer" in outcomes[0].message
    assert len(upstream.requests) == 2  # retried once, on a new connection
    assert upstream.connections == 2


@pytest.mark.parametrize("aiohttp_client", [False, True])
def test_interim_answers_are_skipped_for_the_real_one(aiohttp_client: bool) -> None:
    async def hinted(n: int, _body: bytes) -> bytes:
        early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        return early + answer(OK % n, "Content-Type: application/json")

    outcomes, upstream = run(hinted, posts=2, aiohttp_client=aiohttp_client)
    assert outcomes == [{"ok": 1}, {"ok": 2}]
    assert upstream.connections == 1


@pytest.mark.parametrize("aiohttp_client", [False, True])
@pytest.mark.parametrize("status", ["099 Odd", "000 None"])
def test_a_status_outside_2xx_below_300_is_a_failure_not_an_answer(
    status: str, aiohttp_client: bool
) -> None:
    """Found in review: an answer of status 099 or 000 with a JSON body was read as a success
    (anything under 300 was), and its body billed as the model's answer."""

    async def odd(_n: int, _body: bytes) -> bytes:
        return answer(OK % 0, "Content-Type: application/json", status=status)

    outcomes, _ = run(odd, timeout=1.0, aiohttp_client=aiohttp_client)
    assert isinstance(outcomes[0], UpstreamError), outcomes[0]


def test_parties_never_share_a_connection_so_a_second_answer_stays_with_its_party() -> None:
    """Found by an adversary: an upstream that answers a request twice, the copy coming once
    the connection carries the next request, handed one tenant's answer to another's turn.
    Here the copy comes 50 ms after each answer, before the next request's own answer."""

    async def slow_after_first(n: int, _body: bytes) -> bytes:
        if n > 1:
            await asyncio.sleep(0.15)
        return answer(OK % n, "Content-Type: application/json")

    stray = answer(b'{"stray": true}', "Content-Type: application/json")
    parties = ("account:a", "account:b", "account:a")
    outcomes, upstream = run(slow_after_first, posts=3, then=stray, parties=parties)
    assert outcomes[:2] == [{"ok": 1}, {"ok": 2}]  # b's own answer, on a connection of its own
    assert upstream.connections >= 2
    # a's next POST may meet its own stray copy (as with any client that keeps connections),
    # and then fails or gets its own answer: never b's
    assert outcomes[2] in ({"ok": 3}, {"stray": True}) or isinstance(outcomes[2], UpstreamError)


def test_a_short_lived_loop_leaves_no_kept_connection_open() -> None:
    """The upstream runs on a loop of its own, in another thread: only the end of the client's
    loop (`kit/per_loop.py`) can close the kept connection, not the server going away."""
    upstream = Upstream(numbered)
    server_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=server_loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(upstream.start(), server_loop).result(5)
    kept: list[Any] = []

    async def main() -> None:
        poster = JsonPoster(url, None, 5.0, 0, "openai (test)")
        await poster.post("/answer", {})
        assert poster.plain is not None
        kept.extend(c for pools in poster.plain[0]._pools.held() for c in pools[""])

    try:
        asyncio.run(main())  # never closed the poster: the loop's end does
        assert len(kept) == 1 and kept[0].transport.is_closing()
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(), server_loop).result(5)
        server_loop.call_soon_threadsafe(server_loop.stop)
        thread.join(5)
        server_loop.close()


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("https://api.example.com/v1", {}),
        ("http://user:secret@127.0.0.1:9/v1", {}),
        ("http://127.0.0.1:9/v1/modèles", {}),
        ("http://bücher.example/v1", {}),  # once stopped the server from starting
        ("http://127.0.0.1:9/v1 x", {}),
        ("http://127.0.0.1:9/a/../v1", {}),  # aiohttp sends /v1
        ("http://127.0.0.1:9/v1/%7e", {}),  # aiohttp sends /v1/~
        ("http://127.0.0.1:0/v1", {}),
        ("http://127.0.0.1:9?x=1", {}),  # aiohttp sends /?x=1...
        ("http://127.0.0.1:9/v1", {"Authorization": "Bearer a\r\nX-Evil: 1"}),
        ("http://127.0.0.1:9/v1", {"Authorization": "Bearer clé"}),
        ("http://127.0.0.1:notaport/v1", {}),
    ],
)
def test_what_this_client_does_not_serve_goes_to_aiohttp(url: str, headers: dict[str, str]) -> None:
    assert Origin.of(url, headers) is None


@pytest.mark.parametrize(
    ("url", "host", "target"),
    [
        ("http://127.0.0.1:8000/v1", "127.0.0.1:8000", "/v1"),
        ("HTTP://Models.Example:80/v1", "models.example", "/v1"),  # as aiohttp writes it
        ("http://[::1]:8000", "[::1]:8000", ""),
        ("http://models.example/v1?api-version=1", "models.example", "/v1?api-version=1"),
    ],
)
def test_the_host_and_target_of_what_it_serves(url: str, host: str, target: str) -> None:
    origin, start = Origin.of(url, {}) or (None, None)
    assert origin is not None and start == target
    assert origin.head.startswith(f"Host: {host}\r\n".encode())


def test_a_model_server_at_the_root_gets_the_path_alone() -> None:
    """A base URL with no path (`http://host:port`): `/answer`, not `//answer`."""
    upstream = Upstream(numbered)

    async def main() -> Any:
        url = await upstream.start()
        poster = JsonPoster(url.removesuffix("/v1") + "/", None, 5.0, 0, "openai (test)")
        outcome = await poster.post("/answer", {})
        await poster.aclose()
        await upstream.stop()
        return outcome

    assert asyncio.run(main()) == {"ok": 1}
    assert upstream.requests[0].startswith(b"POST /answer HTTP/1.1\r\n")


def test_a_proxied_upstream_goes_to_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert JsonPoster("http://upstream.test/v1", None, 5.0, 0, "x").plain is None
    monkeypatch.setenv("NO_PROXY", "upstream.test")
    assert JsonPoster("http://upstream.test/v1", None, 5.0, 0, "x").plain is not None
