"""The `openai` SDK's upstream connections, kept per payer (streams, embeddings, images).

A model server that answers a request twice, the copy arriving once the kept connection has
carried the next request, hands that request the first one's answer: no client that keeps
connections can tell the two apart. Kept connections shared by every payer made that one
tenant's answer in another tenant's turn, or one tenant's vectors in another's template, as
`plain_http.py`'s did for non-streamed turns. Each payer (`Owner.party`, named in the request
by `PARTY_HEADER`, which never leaves the process) gets a pool of its own here, so a copy can
reach at most its own payer's next request. A payer's pool is closed once it has had no request
in flight for `IDLE_S`, at another request (`tests/test_party_transport.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import httpx2

PARTY_HEADER = "x-sessionary-party"
IDLE_S = 60.0  # well past httpx's own keep-alive expiry (5 s): an idle pool holds nothing


def party_headers(party: str) -> dict[str, str]:
    """The extra headers that send a request through `party`'s own connections."""
    return {PARTY_HEADER: party}


class _Pool:
    """One payer's connections and how many of its answers are still being read."""

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self.transport = transport
        self.active = 0
        self.used_at = time.monotonic()

    def done(self) -> None:
        self.active -= 1
        self.used_at = time.monotonic()


class _Read(httpx2.AsyncByteStream):
    """An answer's body; its pool counts it in flight until it is closed."""

    def __init__(self, stream: httpx2.AsyncByteStream, pool: _Pool) -> None:
        self.stream, self.pool, self.closed = stream, pool, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.done()
        await self.stream.aclose()


class PartyTransport(httpx2.AsyncBaseTransport):
    """Routes each request to its payer's own pool, made by `make` on its first request."""

    def __init__(self, make: Callable[[], httpx2.AsyncBaseTransport]) -> None:
        self.make = make
        self.pools: dict[str, _Pool] = {}
        self.swept_at = time.monotonic()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        party = request.headers.pop(PARTY_HEADER, "")
        await self._sweep()
        pool = self.pools.get(party)
        if pool is None:
            pool = self.pools[party] = _Pool(self.make())
        pool.active += 1
        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.done()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _Read(response.stream, pool)
        return response

    async def _sweep(self) -> None:
        """Every `IDLE_S` / 4 at most: close the pools with nothing in flight for `IDLE_S`."""
        now = time.monotonic()
        if now - self.swept_at < IDLE_S / 4:
            return
        self.swept_at = now
        for party, pool in list(self.pools.items()):
            if pool.active <= 0 and now - pool.used_at >= IDLE_S:
                del self.pools[party]
                await pool.transport.aclose()

    async def aclose(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.transport.aclose()
