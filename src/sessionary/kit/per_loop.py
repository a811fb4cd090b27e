"""One resource per event loop (a client session, a pool of connections), closed with its loop.

A transport belongs to the loop that made it, so a resource holding connections cannot be
shared by the loops of a process (the server's, a CLI call's, a test's `asyncio.run`). Each
loop's resource is tied to an async generator the loop knows of: `asyncio.run`, and any loop
shut down with `shutdown_asyncgens`, closes it before the loop ends, and the resource with it,
so a short-lived loop leaves no unclosed connections behind.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """`get` answers the running loop's resource, made by `make` on first use (and again when
    `stale` says the last one can no longer serve); `close` ends one."""

    def __init__(
        self,
        make: Callable[[], T],
        close: Callable[[T], Awaitable[None]],
        stale: Callable[[T], bool] = lambda _: False,
    ) -> None:
        self._make, self._close, self._stale = make, close, stale
        self._held: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[T, AsyncGenerator[None]]
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        held = self._held.get(loop)
        if held is None or self._stale(held[0]):
            resource = self._make()
            keeper = self._closing(resource)
            await anext(keeper)
            held = self._held[loop] = (resource, keeper)
        return held[0]

    def held(self) -> list[T]:
        """The resources of the loops still alive (closed or not): for tests and diagnostics."""
        return [resource for resource, _ in self._held.values()]

    async def aclose(self) -> None:
        """Close the running loop's resource, if it has one (the app's shutdown)."""
        held = self._held.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[1].aclose()

    async def _closing(self, resource: T) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await self._close(resource)
