"""The plain JSON POST upstream (providers/json_post.py) keeps the SDK's contract: its retry
policy, bearer auth, and failures as 502/504 naming the provider; and it leaves no connection
open behind a short-lived event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from sessionary.kit.errors import UpstreamError, UpstreamTimeout
from sessionary.providers import json_post
from sessionary.providers.json_post import JsonPoster

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_answer(handler: Handler) -> tuple[web.AppRunner, int]:
    """`handler` as /v1/answer (and /v1/embeddings) on a free loopback port: (its runner, to
    clean up; the port)."""
    app = web.Application()
    app.router.add_post("/v1/answer", handler)
    app.router.add_post("/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def serve_and_post(
    handler: Handler,
    *,
    max_retries: int = 2,
    timeout: float = 5.0,
    body: Any = None,
    aiohttp_client: bool = False,
) -> tuple[Any, list[dict[str, Any]], JsonPoster]:
    """Run `handler` as the upstream's /v1/answer and POST to it once through a JsonPoster;
    (the answer or the raised error, the requests the upstream saw, the poster). The POST goes
    through kept plain-http connections (`plain_http.py`), or aiohttp's client, as with
    `https://` or a proxy, when `aiohttp_client`."""
    seen: list[dict[str, Any]] = []

    async def recorded(request: web.Request) -> web.StreamResponse:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return await handler(request)

    async def main() -> tuple[Any, JsonPoster]:
        runner, port = await serve_answer(recorded)
        poster = JsonPoster(
            f"http://127.0.0.1:{port}/v1", "sk-upstream", timeout, max_retries, "openai (test)"
        )
        if aiohttp_client:
            poster.plain = None
        try:
            outcome: Any = await poster.post("/answer", body or {"model": "m", "input": "hi"})
        except Exception as exc:  # the test looks at it
            outcome = exc
        await runner.cleanup()
        return outcome, poster

    outcome, poster = asyncio.run(main())
    return outcome, seen, poster


@pytest.mark.parametrize("aiohttp_client", [False, True])
def test_answers_the_json_and_sends_the_key_as_a_bearer_token(aiohttp_client: bool) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"id": "resp_1", "output": []})

    outcome, seen, poster = serve_and_post(
        ok, body={"model": "m", "input": "héllo \u0000"}, aiohttp_client=aiohttp_client
    )
    assert outcome == {"id": "resp_1", "output": []}
    assert seen[0]["headers"]["Authorization"] == "Bearer sk-upstream"
    assert seen[0]["headers"]["User-Agent"].startswith("sessionary/")
    assert seen[0]["body"] == {"model": "m", "input": "héllo \u0000"}
    if aiohttp_client:  # asyncio.run closed the loop's session (no unclosed connections)
        assert len(poster._sessions.held()) == 1
        assert all(session.closed for session in poster._sessions.held())
    # the plain-http client's: tests/test_plain_http.py::test_a_short_lived_loop_leaves_no_kept_...


def test_retries_5xx_and_429_then_answers_honouring_retry_after() -> None:
    statuses = iter([503, 429])

    async def flaky(_: web.Request) -> web.Response:
        status = next(statuses, 200)
        if status == 200:
            return web.json_response({"ok": True})
        return web.json_response({"error": "busy"}, status=status, headers={"retry-after": "0.01"})

    outcome, seen, _ = serve_and_post(flaky, max_retries=2)
    assert outcome == {"ok": True}
    assert len(seen) == 3


def test_a_failure_after_the_retries_is_a_502_naming_the_provider_and_status() -> None:
    async def down(_: web.Request) -> web.Response:
        return web.Response(status=500, headers={"retry-after": "0.01"})

    outcome, seen, _ = serve_and_post(down, max_retries=1)
    assert isinstance(outcome, UpstreamError) and outcome.status_code == 502
    assert "openai (test)" in outcome.message and "HTTP 500" in outcome.message
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("status", "headers"), [(400, {}), (401, {}), (404, {}), (500, {"x-should-retry": "false"})]
)
def test_a_refusal_is_not_retried(status: int, headers: dict[str, str]) -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "no"}}, status=status, headers=headers)

    outcome, seen, _ = serve_and_post(refuse, max_retries=3)
    assert isinstance(outcome, UpstreamError) and f"HTTP {status}" in outcome.message
    assert len(seen) == 1


def test_x_should_retry_true_retries_a_4xx() -> None:
    answers = iter([400])

    async def asked(_: web.Request) -> web.Response:
        if next(answers, None) == 400:
            return web.Response(status=400, headers={"x-should-retry": "true", "retry-after": "0"})
        return web.json_response({"ok": 1})

    outcome, seen, _ = serve_and_post(asked, max_retries=1)
    assert outcome == {"ok": 1} and len(seen) == 2


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"", json.dumps("text").encode()])
def test_an_answer_that_is_not_a_json_object_is_a_502(content: bytes) -> None:
    async def odd(_: web.Request) -> web.Response:
        return web.Response(body=content, content_type="application/json")

    outcome, _, _ = serve_and_post(odd)
    assert isinstance(outcome, UpstreamError) and "not a JSON object" in outcome.message


def test_no_answer_in_time_is_a_504() -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    outcome, seen, _ = serve_and_post(slow, max_retries=0, timeout=0.3)
    assert isinstance(outcome, UpstreamTimeout) and outcome.status_code == 504
    assert len(seen) == 1


def test_a_redirect_is_not_followed_and_is_a_502() -> None:
    async def moved(_: web.Request) -> web.Response:
        return web.json_response({"ok": True}, status=307, headers={"Location": "/v1/other"})

    outcome, seen, _ = serve_and_post(moved)
    assert isinstance(outcome, UpstreamError) and "HTTP 307" in outcome.message
    assert len(seen) == 1


def test_an_answer_over_the_size_limit_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_post, "MAX_ANSWER_BYTES", 1 << 20)

    async def huge(_: web.Request) -> web.Response:
        return web.json_response({"text": "x" * (2 << 20)})

    outcome, _, _ = serve_and_post(huge)
    assert isinstance(outcome, UpstreamError) and "over 1 MiB" in outcome.message


def test_json_nested_too_deep_to_parse_is_a_502() -> None:
    async def deep(_: web.Request) -> web.Response:
        return web.Response(body=b"[" * 200_000 + b"]" * 200_000, content_type="application/json")

    outcome, _, _ = serve_and_post(deep)
    assert isinstance(outcome, UpstreamError) and "not a JSON object" in outcome.message


def test_a_deep_answer_with_a_nul_to_replace_is_a_502_not_a_500() -> None:
    depth = 900  # within the parser's reach, beyond the cleaning's recursion

    async def deep(_: web.Request) -> web.Response:
        body = b'{"a": ' + b"[" * depth + b'"\\u0000"' + b"]" * depth + b"}"
        return web.Response(body=body, content_type="application/json")

    outcome, _, _ = serve_and_post(deep)
    assert isinstance(outcome, UpstreamError) and "not a JSON object" in outcome.message


def test_goes_through_the_environments_proxy_and_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured as the SDK's client honours it (read once, when the provider is
    made), and NO_PROXY bypasses it."""
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.host}{request.path}")
        return web.json_response({"via": "proxy"})

    async def main() -> tuple[Any, Any]:
        runner, port = await serve_answer(proxy)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("NO_PROXY", "bypassed.test")
        through = JsonPoster("http://upstream.test/v1", None, 5.0, 0, "openai (test)")
        bypassed = JsonPoster("http://bypassed.test:9/v1", None, 2.0, 0, "openai (test)")
        monkeypatch.delenv("HTTP_PROXY")  # read when the poster was made, not per request
        answer = await through.post("/answer", {"model": "m"})
        try:
            failure: Any = await bypassed.post("/answer", {"model": "m"})
        except UpstreamError as exc:
            failure = exc
        await through.aclose()
        await bypassed.aclose()
        await runner.cleanup()
        return answer, failure

    answer, failure = asyncio.run(main())
    assert answer == {"via": "proxy"}
    assert seen == ["POST upstream.test/v1/answer"]
    assert isinstance(failure, UpstreamError)  # straight to bypassed.test, which is no host
