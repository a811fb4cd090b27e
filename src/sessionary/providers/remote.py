"""Shared by the `openai` providers: one SDK client per slot, and one mapping of its failures.

The SDK already retries connection errors, 408/409/429 and 5xx with exponential backoff
(`max_retries`); what is left after that is turned into 502/504 with the provider named, never a
stack trace.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sessionary.kit.errors import ApiError
from sessionary.providers.errors import ProviderUnavailable, upstream_failure
from sessionary.providers.party_transport import PartyTransport
from sessionary.providers.settings import ProviderSettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class LoopClients:
    """One SDK client per event loop: its connection pools belong to the loop that made them.
    Its connections are kept per payer (`party_transport.py`): a request names its payer with
    `party_headers`."""

    def __init__(self, settings: ProviderSettings, slot: str) -> None:
        try:
            import openai  # noqa: F401
        except ImportError as exc:
            raise ProviderUnavailable("The openai provider needs the `openai` package.") from exc
        self.api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.base_url = settings.base_url or DEFAULT_BASE_URL
        if self.base_url == DEFAULT_BASE_URL and not self.api_key:
            raise ProviderUnavailable(
                f"SESSIONARY_{slot}__API_KEY is required for the openai provider at "
                f"{self.base_url} (or set SESSIONARY_{slot}__BASE_URL to a server that needs none)."
            )
        self.timeout = settings.timeout_seconds
        self.max_retries = settings.max_retries
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "unused",
                timeout=self.timeout,
                max_retries=self.max_retries,
                http_client=self._http_client(),
            )
            self._clients[loop] = client
        return client

    def _http_client(self) -> Any:
        """The SDK's own client (its timeout, limits, redirects) over per-payer pools, each
        through the proxy the environment names for the base URL, as the SDK's would go (a
        client given a transport reads no proxy from the environment itself)."""
        import httpx2
        from openai import DefaultAsyncHttpxClient

        from sessionary.providers.json_post import env_proxy

        proxy_url, auth = env_proxy(self.base_url)
        proxy = None
        if proxy_url is not None:
            proxy = httpx2.Proxy(
                str(proxy_url), auth=(auth.login, auth.password) if auth is not None else None
            )
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

        def pool() -> httpx2.AsyncBaseTransport:
            return httpx2.AsyncHTTPTransport(limits=limits, proxy=proxy)

        return DefaultAsyncHttpxClient(transport=PartyTransport(pool))


def require_model(settings: ProviderSettings, slot: str) -> str:
    if not settings.model:
        raise ProviderUnavailable(f"SESSIONARY_{slot}__MODEL is required for the openai provider.")
    return settings.model


@contextmanager
def upstream_errors(label: str, timeout_seconds: float) -> Iterator[None]:
    """Map what the SDK raises after its retries to our statuses."""
    import openai

    try:
        yield
    except ApiError:
        raise
    except openai.APITimeoutError as exc:
        raise upstream_failure(label, f"no answer within {timeout_seconds:g}s", status=504) from exc
    except openai.APIConnectionError as exc:
        raise upstream_failure(label, "could not connect") from exc
    except openai.APIStatusError as exc:
        raise upstream_failure(label, f"it answered HTTP {exc.status_code}") from exc
    except openai.APIError as exc:
        raise upstream_failure(label, f"unusable answer ({type(exc).__name__})") from exc
