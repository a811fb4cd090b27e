"""A plain JSON POST to an OpenAI-compatible server, for answers that are not streamed.

The `openai` SDK's request path (request options, httpx's transport, its response wrapper) cost
about 0.9 ms of CPU per call in the gateway benchmark; aiohttp's client does the same POST in
about 0.2 ms, and kept plain-http connections of our own (`plain_http.py`, for `http://` model
servers without a proxy) in 0.05 ms. What the SDK gave these calls is kept: the API key as a
bearer token, its retry policy (connection errors, timeouts, 408, 409, 429 and 5xx,
`max_retries` times, exponential backoff from 0.5 s up to 8 s with jitter, or the server's
`retry-after` when it asks for at most 60 s) and one total timeout per attempt. Failures end
as the same 502/504 `ApiError`s `remote.upstream_errors` makes of the SDK's exceptions. Streams
still go through the SDK.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Mapping
from typing import Any, cast

import aiohttp
from aiohttp.helpers import BasicAuth, get_env_proxy_for_url
from yarl import URL

from sessionary import __version__
from sessionary.kit.json_answer import json_bytes
from sessionary.kit.per_loop import PerLoop
from sessionary.providers.errors import upstream_failure
from sessionary.providers.plain_http import Failed, Origin, TooLarge, succeeded

RETRIED_STATUSES = frozenset({408, 409, 429})
# An image generation answer carries a few MB of base64; nothing legitimate comes near this.
MAX_ANSWER_BYTES = 64 << 20
_ESCAPED_NUL_OR_SURROGATE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")
INITIAL_BACKOFF, MAX_BACKOFF, MAX_RETRY_AFTER = 0.5, 8.0, 60.0


def _backoff(attempt: int, retry_after: str | None) -> float:
    """The SDK's wait before retry `attempt` (0-based): the server's ask, when sane, else
    exponential with up to 25% jitter taken off."""
    if retry_after:
        try:
            asked = float(retry_after)
        except ValueError:
            asked = -1.0
        if 0 < asked <= MAX_RETRY_AFTER:
            return asked
    delay = min(INITIAL_BACKOFF * 2.0**attempt, MAX_BACKOFF)
    return delay * (1 - 0.25 * random.random())  # noqa: S311 (jitter, not a secret)


def storable(text: str) -> str:
    """`text` with U+FFFD for each NUL and lone UTF-16 surrogate (valid JSON escapes, but
    neither can be stored on PostgreSQL nor encoded as UTF-8 on the way out); streamed
    pieces take it too (`llm/openai.py`)."""
    return _NUL_OR_SURROGATE.sub("\ufffd", text)


def _cleaned(value: Any) -> Any:
    """`storable` for every string of a parsed answer, keys included."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, dict):
        return {_cleaned(k): _cleaned(v) for k, v in value.items()}
    return value


def _retried(status: int, should_retry: str | None) -> bool:
    if should_retry in ("true", "false"):
        return should_retry == "true"
    return status in RETRIED_STATUSES or status >= 500


def env_proxy(url: str) -> tuple[URL | None, BasicAuth | None]:
    """The proxy `HTTP(S)_PROXY` / `NO_PROXY` name for `url`, read once: aiohttp's `trust_env`
    reads the whole environment again on every request (about 0.1 ms each). The SDK's client
    also reads them once, when it is made."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


def _closed(session: aiohttp.ClientSession) -> bool:
    return session.closed


class JsonPoster:
    """POSTs JSON to `base_url` and answers the parsed JSON object; one aiohttp session per
    event loop (`kit/per_loop.py`: a connection pool belongs to the loop that made it)."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, max_retries: int, label: str
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.label = label
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"sessionary/{__version__}",
        }
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.proxy, self.proxy_auth = env_proxy(self.base_url)
        # A plain-http model server with no proxy: `plain_http.py`'s own connections.
        self.plain = Origin.of(self.base_url, self.headers) if self.proxy is None else None
        self._sessions = PerLoop(self._new_session, _close_session, _closed)

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            headers=self.headers,
            # each attempt's deadline is `post`'s own, the same for both clients
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            trust_env=False,  # the proxy is `self.proxy`, from the environment at start
        )

    async def aclose(self) -> None:
        """Close this loop's session and connections (the app's shutdown)."""
        await self._sessions.aclose()
        if self.plain is not None:
            await self.plain[0].aclose()

    async def post(self, path: str, body: dict[str, Any], *, party: str = "") -> dict[str, Any]:
        """The answer of a 2xx as a JSON object; a 502/504 `ApiError` once retries are spent.
        `party`: whom the answer is for (`plain_http.Origin.post`)."""
        data = json_bytes(body)  # no NaN or infinity: the edge refuses them (`kit/text_rule.py`)
        for attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    status, headers, content = await self._exchange(path, data, party)
                if succeeded(status):  # a status of 0xx is no success, whatever follows
                    return self._parsed(content)
                failure = upstream_failure(self.label, f"it answered HTTP {status}")
                if not _retried(status, headers.get("x-should-retry")):
                    raise failure
                retry_after = headers.get("retry-after")
            except TimeoutError:
                failure = upstream_failure(
                    self.label, f"no answer within {self.timeout:g}s", status=504
                )
            except TooLarge:
                limit = f"an answer over {MAX_ANSWER_BYTES // (1 << 20)} MiB"
                raise upstream_failure(self.label, limit) from None
            except Failed:  # connected: what came back is no answer, or only part of one
                failure = upstream_failure(self.label, "no readable answer")
            except (aiohttp.ClientConnectorError, OSError):
                failure = upstream_failure(self.label, "could not connect")
            except aiohttp.ClientError:
                failure = upstream_failure(self.label, "no readable answer")
            if attempt < self.max_retries:
                await asyncio.sleep(_backoff(attempt, retry_after))
        raise failure

    async def _exchange(
        self, path: str, data: bytes, party: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One POST: (status, headers, body), through kept plain-http connections where they
        serve (`plain_http.py`), else aiohttp's client."""
        if self.plain is not None:
            origin, target = self.plain
            return await origin.post(target + path, data, MAX_ANSWER_BYTES, party)
        session = await self._sessions.get()
        async with session.post(
            self.base_url + path,
            data=data,
            allow_redirects=False,
            proxy=self.proxy,
            proxy_auth=self.proxy_auth,
        ) as answer:
            content = await self._body(answer) if succeeded(answer.status) else b""
            return answer.status, answer.headers, content

    async def _body(self, answer: aiohttp.ClientResponse) -> bytes:
        """The answer's body (decompressed), refused past `MAX_ANSWER_BYTES`: a runaway or
        hostile upstream does not get to fill the server's memory."""
        body = bytearray()
        async for chunk in answer.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise TooLarge()
        return bytes(body)

    def _parsed(self, content: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(content)
            if isinstance(answer, dict) and _ESCAPED_NUL_OR_SURROGATE.search(content):
                answer = _cleaned(answer)  # as deep as the parser went, or RecursionError
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise upstream_failure(self.label, "unusable answer (not a JSON object)")
        return cast(dict[str, Any], answer)
