"""The `openai` SDK's upstream connections are kept per payer (providers/party_transport.py): an
upstream that answers a request twice never hands one payer's answer to another, on the SDK's
paths (streams, embeddings, images), as on plain_http's (tests/test_plain_http.py -k parties)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import pytest

from sessionary.providers import party_transport, registry
from sessionary.providers.party_transport import PARTY_HEADER, PartyTransport
from tests.test_plain_http import Upstream, answer


def _vectors(n: int) -> bytes:
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [n, 1.0]}],
            "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
    return answer(json.dumps(body).encode(), "Content-Type: application/json")


async def _slow_after_first(n: int, _body: bytes) -> bytes:
    """Each answer's copy comes 50 ms after it (`Upstream.then`), and the answers after the
    first 150 ms after their request: a kept connection meets the copy first."""
    if n > 1:
        await asyncio.sleep(0.15)
    return _vectors(n)


def _embeddings(url: str) -> Any:
    settings = {"provider": "openai", "model": "m", "base_url": url, "max_retries": 0}
    from sessionary.providers.settings import ProviderSettings

    return registry.build("embeddings", ProviderSettings(**settings, timeout_seconds=5))


def test_a_second_answer_never_reaches_another_payer_through_the_sdk() -> None:
    """Found by an adversary: streamed turns and `/v1/embeddings` went through the SDK's one
    pool for everyone, and 20 of 160 of a tenant's embeddings were another tenant's vectors."""
    upstream = Upstream(_slow_after_first)
    upstream.then = _vectors(-1)  # the copy, with a vector nobody asked for

    async def main() -> list[Any]:
        url = await upstream.start()
        embedder = _embeddings(url)
        got = []
        for party in ("account:a", "account:b", "external_user:c"):
            try:
                vector = (await embedder.embed(["x"], party)).vectors[0]
                got.append(round(vector[0] / vector[1], 3))  # n, as sent (they come normalised)
            except Exception as exc:  # the test looks at it
                got.append(exc)
        await upstream.stop()
        return got

    got = asyncio.run(main())
    assert got == [1.0, 2.0, 3.0]  # each its own answer, on a connection of its own
    assert upstream.connections == 3
    assert all(PARTY_HEADER.encode() not in r.lower() for r in upstream.requests)  # never sent


def test_one_payer_reuses_its_connection_and_idle_pools_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(party_transport, "IDLE_S", 0.2)

    async def numbered(n: int, _body: bytes) -> bytes:
        return _vectors(n)

    upstream = Upstream(numbered)

    async def main() -> tuple[list[str], int, list[str]]:
        url = await upstream.start()
        transport = PartyTransport(httpx2.AsyncHTTPTransport)
        async with httpx2.AsyncClient(transport=transport) as client:
            for party in ("a", "a", "b"):
                await client.post(url + "/embeddings", json={}, headers={PARTY_HEADER: party})
            before = sorted(transport.pools)
            await asyncio.sleep(0.3)
            await client.post(url + "/embeddings", json={}, headers={PARTY_HEADER: "c"})
            await asyncio.sleep(0.05)  # the server sees the idle ones closed
            after = sorted(transport.pools)
            left = len(upstream.open)
        await upstream.stop()
        return before, left, after

    before, left, after = asyncio.run(main())
    assert before == ["a", "b"] and upstream.connections == 3  # a's second POST reused its own
    assert after == ["c"] and left == 1


def test_a_pool_with_an_answer_still_being_read_is_not_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream outlives `IDLE_S`: its pool stays until its answer is closed."""
    monkeypatch.setattr(party_transport, "IDLE_S", 0.05)

    async def numbered(n: int, _body: bytes) -> bytes:
        return _vectors(n)

    upstream = Upstream(numbered)

    async def main() -> tuple[bool, bool]:
        url = await upstream.start()
        transport = PartyTransport(httpx2.AsyncHTTPTransport)
        async with httpx2.AsyncClient(transport=transport) as client:
            request = client.build_request("POST", url + "/embeddings", json={})
            request.headers[PARTY_HEADER] = "slow"
            reading = await client.send(request, stream=True)
            await asyncio.sleep(0.1)
            await client.post(url + "/embeddings", json={}, headers={PARTY_HEADER: "other"})
            kept_while_read = "slow" in transport.pools
            await reading.aread()
            await reading.aclose()
            await asyncio.sleep(0.1)
            await client.post(url + "/embeddings", json={}, headers={PARTY_HEADER: "other"})
            gone_after = "slow" not in transport.pools
        await upstream.stop()
        return kept_while_read, gone_after

    assert asyncio.run(main()) == (True, True)


def test_the_sdk_goes_through_the_environments_proxy_and_honours_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client given its own transport reads no proxy from the environment: the pools do, for
    the base URL, as the SDK's own client did."""
    from aiohttp import web

    from tests.test_json_post import serve_answer

    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.host}{request.path}")
        return web.Response(
            body=_vectors(7).partition(b"\r\n\r\n")[2], content_type="application/json"
        )

    async def main() -> tuple[Any, Any]:
        runner, port = await serve_answer(proxy)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("NO_PROXY", "bypassed.test")
        through = await _embeddings("http://upstream.test/v1").embed(["x"], "account:a")
        try:
            bypassed: Any = await _embeddings("http://bypassed.test:9/v1").embed(["x"], "a")
        except Exception as exc:  # the test looks at it
            bypassed = exc
        await runner.cleanup()
        return through, bypassed

    through, bypassed = asyncio.run(main())
    assert round(through.vectors[0][0] / through.vectors[0][1]) == 7
    assert seen == ["POST upstream.test/v1/embeddings"]
    assert isinstance(bypassed, Exception)  # straight to bypassed.test, which is no host
