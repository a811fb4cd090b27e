"""A few threads of their own for short units of work, handed over without anyio's bookkeeping.

`anyio.to_thread.run_sync` finds the backend, the loop's default limiter, a cancel scope and the
thread-local tokens on every call: in a py-spy profile of two PostgreSQL workers at 16 clients,
the event loop's side of a turn's two hand-offs was 16% of the interpreter's time, half of it
that bookkeeping (the other half is waking the thread, which any pool pays). Here a hand-off is
a submit to a `ThreadPoolExecutor` and an await of its future.

What it keeps of anyio's contract (`tests/test_unit_threads.py`):
- at most `size` units run at once; the others wait in order for a thread;
- the work runs in a copy of the caller's context (its request id, its logging);
- a caller cancelled before its unit began: the unit never runs; after it began: the caller
  still waits for it to end, then is cancelled (a unit of work is never left half-seen);
- the unit may call an async function on the caller's event loop (`call_on_loop`), as
  `anyio.from_thread.run` lets anyio's workers do.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# The event loop that handed the running unit over, in this pool's threads.
_HANDED_BY = threading.local()


class UnitThreads:
    """Up to `size` threads for short units of work (`Database.in_worker`)."""

    def __init__(self, size: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix=name)

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` on one of these threads; its answer, or what it raised."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future = self._executor.submit(context.run, _handed_over, loop, work)
        waiting = asyncio.wrap_future(future, loop=loop)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if future.cancel():
                raise  # it never began, and never will
            while not waiting.done():  # it began: wait for its end, as anyio's callers do
                try:
                    await asyncio.shield(waiting)
                except asyncio.CancelledError:
                    continue
                except Exception:  # its own failure: the caller was cancelled
                    break
            raise

    def close(self) -> None:
        """No new units; those running end on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _handed_over(loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
    _HANDED_BY.loop = loop
    try:
        return work()
    finally:
        _HANDED_BY.loop = None


def handed_by() -> asyncio.AbstractEventLoop | None:
    """The event loop that handed this thread its running unit (None: not one of these)."""
    return getattr(_HANDED_BY, "loop", None)


def call_on_loop(call: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """From a unit on one of these threads: run `call(*args)` on the loop that handed the unit
    over, and wait for its answer."""
    loop = handed_by()
    if loop is None:
        raise RuntimeError("call_on_loop is for units handed over by UnitThreads.run")
    return asyncio.run_coroutine_threadsafe(call(*args), loop).result()
