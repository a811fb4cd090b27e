"""`Sessionary` (sync) and `AsyncSessionary` (async): the same methods, sent two ways.

Each method is declared once in `operations.py`; here `sync_op` / `async_op` turn it into a bound
method that sends the call with retries (connection errors, 408/409/429/5xx, honouring
`Retry-After`) and one `Idempotency-Key` per POST, the same on every retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, ParamSpec, Self, TypeVar, overload

import httpx
from httpx_sse import EventSource
from pydantic import BaseModel

from sessionary.client import operations as ops
from sessionary.client.errors import APIConnectionError, APITimeoutError, error_for
from sessionary.client.models import Response
from sessionary.client.streaming import AsyncStream, Stream
from sessionary.client.transport import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ClientConfig,
    Prepared,
    Result,
    body_of,
    parse,
    prepare,
    retry_delay,
    should_retry,
)

P = ParamSpec("P")
T = TypeVar("T", bound=BaseModel)


def _connection_error(exc: httpx.TransportError, url: str) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"Timed out calling {url}: {exc}")
    return APIConnectionError(f"Cannot reach {url}: {exc}")


class sync_op(Generic[P, T]):
    def __init__(self, build: Callable[P, ops.Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    def __get__(self, client: Sessionary, owner: type | None = None) -> Callable[P, Result[T]]:
        def method(*args: P.args, **kwargs: P.kwargs) -> Result[T]:
            return client.send(self.build(*args, **kwargs))

        method.__doc__ = self.build.__doc__
        method.__name__ = self.build.__name__
        return method


class async_op(Generic[P, T]):
    def __init__(self, build: Callable[P, ops.Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    def __get__(
        self, client: AsyncSessionary, owner: type | None = None
    ) -> Callable[P, Awaitable[Result[T]]]:
        async def method(*args: P.args, **kwargs: P.kwargs) -> Result[T]:
            return await client.send(self.build(*args, **kwargs))

        method.__doc__ = self.build.__doc__
        method.__name__ = self.build.__name__
        return method


class _Options:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        auth_token: str | None = None,
        external_user_api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.config = ClientConfig.build(
            api_key=api_key,
            auth_token=auth_token,
            external_user_api_key=external_user_api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )

    @property
    def base_url(self) -> str:
        return self.config.base_url


class Sessionary(_Options):
    """The synchronous client. Use it as a context manager, or call `close()`."""

    def __init__(self, *, http_client: httpx.Client | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._http = http_client or httpx.Client(
            headers=self.config.headers(), timeout=self.config.timeout
        )
        if http_client is not None:
            self._http.headers.update(self.config.headers())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _attempts(self, prepared: Prepared, open_: Callable[[], httpx.Response]) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = open_()
            except httpx.TransportError as exc:
                if not should_retry(attempt, self.config, None):
                    raise _connection_error(exc, prepared.url) from exc
                time.sleep(retry_delay(attempt, None))
            else:
                if response.status_code < 400 or not should_retry(attempt, self.config, response):
                    return response
                response.read()
                response.close()
                time.sleep(retry_delay(attempt, response))
            attempt += 1

    def send(self, call: ops.Call[T]) -> Result[T]:
        prepared = prepare(self.config, call)
        response = self._attempts(
            prepared,
            lambda: self._http.request(
                prepared.method,
                prepared.url,
                json=prepared.json,
                params=prepared.params,
                headers=prepared.headers,
            ),
        )
        return parse(call, response)

    def stream(self, call: ops.Call[Any]) -> Stream:
        prepared = prepare(self.config, call, stream=True)

        def open_() -> httpx.Response:
            request = self._http.build_request(
                prepared.method, prepared.url, json=prepared.json, headers=prepared.headers
            )
            return self._http.send(request, stream=True)

        response = self._attempts(prepared, open_)
        if response.status_code >= 400:
            response.read()
            response.close()
            raise error_for(response, body_of(response))
        return Stream(response, EventSource(response).iter_sse(), response.close)

    @overload
    def create_assistant_completion(
        self, session_id: str, input: Any = ..., *, stream: Literal[False] = ..., **options: Any
    ) -> Result[Response]: ...

    @overload
    def create_assistant_completion(
        self, session_id: str, input: Any = ..., *, stream: Literal[True], **options: Any
    ) -> Stream: ...

    def create_assistant_completion(
        self, session_id: str, input: Any = None, *, stream: bool = False, **options: Any
    ) -> Result[Response] | Stream:
        """One turn on a session; `stream=True` gives typed events (see `Stream`)."""
        if stream:
            return self.stream(
                ops.create_assistant_completion(session_id, input, stream=True, **options)
            )
        return self.send(ops.create_assistant_completion(session_id, input, **options))

    create_assistant_session = sync_op(ops.create_assistant_session)
    set_assistant_system_prompt = sync_op(ops.set_assistant_system_prompt)
    enhance_message = sync_op(ops.enhance_message)
    create_embedding = sync_op(ops.create_embedding)
    update_embedding = sync_op(ops.update_embedding)
    generate_embeddings_from_plain_text = sync_op(ops.generate_embeddings_from_plain_text)
    delete_embeddings = sync_op(ops.delete_embeddings)
    delete_embedding = sync_op(ops.delete_embedding)
    search_against_embedding = sync_op(ops.search_against_embedding)
    similar_to_embedding = sync_op(ops.similar_to_embedding)
    list_embedding_templates = sync_op(ops.list_embedding_templates)
    get_embedding_status = sync_op(ops.get_embedding_status)
    create_embeddings = sync_op(ops.create_embeddings)
    get_credits_balance = sync_op(ops.get_credits_balance)
    create_login_token = sync_op(ops.create_login_token)
    verify_client_session = sync_op(ops.verify_client_session)
    create_external_user_session = sync_op(ops.create_external_user_session)
    get_external_credits_balance = sync_op(ops.get_external_credits_balance)
    grant_external_user_credits = sync_op(ops.grant_external_user_credits)
    create_external_assistant_session = sync_op(ops.create_external_assistant_session)
    set_external_assistant_system_prompt = sync_op(ops.set_external_assistant_system_prompt)
    create_external_assistant_completion = sync_op(ops.create_external_assistant_completion)
    generate_external_embeddings_from_plain_text = sync_op(
        ops.generate_external_embeddings_from_plain_text
    )
    create_external_embeddings = sync_op(ops.create_external_embeddings)
    charge_external_user_utility_usage = sync_op(ops.charge_external_user_utility_usage)
    list_external_user_requests = sync_op(ops.list_external_user_requests)
    archive_external_user_request = sync_op(ops.archive_external_user_request)
    publish_external_user_request = sync_op(ops.publish_external_user_request)
    create_external_user_login_token = sync_op(ops.create_external_user_login_token)
    list_sessions = sync_op(ops.list_sessions)
    list_session_messages = sync_op(ops.list_session_messages)


class AsyncSessionary(_Options):
    """The asynchronous client. Use it with `async with`, or `await close()`."""

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._http = http_client or httpx.AsyncClient(
            headers=self.config.headers(), timeout=self.config.timeout
        )
        if http_client is not None:
            self._http.headers.update(self.config.headers())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _attempts(
        self, prepared: Prepared, open_: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await open_()
            except httpx.TransportError as exc:
                if not should_retry(attempt, self.config, None):
                    raise _connection_error(exc, prepared.url) from exc
                await asyncio.sleep(retry_delay(attempt, None))
            else:
                if response.status_code < 400 or not should_retry(attempt, self.config, response):
                    return response
                await response.aread()
                await response.aclose()
                await asyncio.sleep(retry_delay(attempt, response))
            attempt += 1

    async def send(self, call: ops.Call[T]) -> Result[T]:
        prepared = prepare(self.config, call)
        response = await self._attempts(
            prepared,
            lambda: self._http.request(
                prepared.method,
                prepared.url,
                json=prepared.json,
                params=prepared.params,
                headers=prepared.headers,
            ),
        )
        return parse(call, response)

    async def stream(self, call: ops.Call[Any]) -> AsyncStream:
        prepared = prepare(self.config, call, stream=True)

        async def open_() -> httpx.Response:
            request = self._http.build_request(
                prepared.method, prepared.url, json=prepared.json, headers=prepared.headers
            )
            return await self._http.send(request, stream=True)

        response = await self._attempts(prepared, open_)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise error_for(response, body_of(response))
        return AsyncStream(response, EventSource(response).aiter_sse(), response.aclose)

    @overload
    async def create_assistant_completion(
        self, session_id: str, input: Any = ..., *, stream: Literal[False] = ..., **options: Any
    ) -> Result[Response]: ...

    @overload
    async def create_assistant_completion(
        self, session_id: str, input: Any = ..., *, stream: Literal[True], **options: Any
    ) -> AsyncStream: ...

    async def create_assistant_completion(
        self, session_id: str, input: Any = None, *, stream: bool = False, **options: Any
    ) -> Result[Response] | AsyncStream:
        """One turn on a session; `stream=True` gives typed events (see `AsyncStream`)."""
        if stream:
            return await self.stream(
                ops.create_assistant_completion(session_id, input, stream=True, **options)
            )
        return await self.send(ops.create_assistant_completion(session_id, input, **options))

    create_assistant_session = async_op(ops.create_assistant_session)
    set_assistant_system_prompt = async_op(ops.set_assistant_system_prompt)
    enhance_message = async_op(ops.enhance_message)
    create_embedding = async_op(ops.create_embedding)
    update_embedding = async_op(ops.update_embedding)
    generate_embeddings_from_plain_text = async_op(ops.generate_embeddings_from_plain_text)
    delete_embeddings = async_op(ops.delete_embeddings)
    delete_embedding = async_op(ops.delete_embedding)
    search_against_embedding = async_op(ops.search_against_embedding)
    similar_to_embedding = async_op(ops.similar_to_embedding)
    list_embedding_templates = async_op(ops.list_embedding_templates)
    get_embedding_status = async_op(ops.get_embedding_status)
    create_embeddings = async_op(ops.create_embeddings)
    get_credits_balance = async_op(ops.get_credits_balance)
    create_login_token = async_op(ops.create_login_token)
    verify_client_session = async_op(ops.verify_client_session)
    create_external_user_session = async_op(ops.create_external_user_session)
    get_external_credits_balance = async_op(ops.get_external_credits_balance)
    grant_external_user_credits = async_op(ops.grant_external_user_credits)
    create_external_assistant_session = async_op(ops.create_external_assistant_session)
    set_external_assistant_system_prompt = async_op(ops.set_external_assistant_system_prompt)
    create_external_assistant_completion = async_op(ops.create_external_assistant_completion)
    generate_external_embeddings_from_plain_text = async_op(
        ops.generate_external_embeddings_from_plain_text
    )
    create_external_embeddings = async_op(ops.create_external_embeddings)
    charge_external_user_utility_usage = async_op(ops.charge_external_user_utility_usage)
    list_external_user_requests = async_op(ops.list_external_user_requests)
    archive_external_user_request = async_op(ops.archive_external_user_request)
    publish_external_user_request = async_op(ops.publish_external_user_request)
    create_external_user_login_token = async_op(ops.create_external_user_login_token)
    list_sessions = async_op(ops.list_sessions)
    list_session_messages = async_op(ops.list_session_messages)


__all__ = ["AsyncSessionary", "Sessionary"]
