"""A few threads of their own for short units of work, handed over without anyio's bookkeeping.

`anyio.to_thread.run_sync` finds the backend, the loop's default limiter and the thread-local
tokens, checks for cancellation and manages its own workers on every call: in a py-spy profile
of two PostgreSQL workers at 16 clients, the event loop's side of a turn's two hand-offs was 16%
of the interpreter's time, half of it that bookkeeping (the other half is waking the thread,
which any pool pays). Here a hand-off takes a slot of a semaphore, submits to a
`ThreadPoolExecutor` with a thread free for it, and awaits its future.

What it keeps of anyio's contract (`tests/test_unit_threads.py`):
- at most `size` units run at once; the others wait in order for a slot;
- the work runs in a copy of the caller's context (its request id, its logging);
- a caller cancelled while it waits for a slot: the unit never runs; once the unit is handed
  over, a cancel scope's cancellation (Starlette's, a task group's) waits for the unit's end,
  its answer is returned, and the cancellation comes at the caller's next await, so what the
  unit did (a hold taken, a charge settled) is never lost on the way back; a plain
  `Task.cancel()` interrupts the wait at once, as in anyio;
- the unit may call an async function on the caller's event loop (`call_on_loop`), as
  `anyio.from_thread.run` lets anyio's workers do;
- closing ends the threads; the next unit opens new ones (an app's lifespan may run again).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from anyio import CancelScope, current_effective_deadline

T = TypeVar("T")

# The event loop that handed the running unit over, in this pool's threads.
_HANDED_BY = threading.local()


class UnitThreads:
    """Up to `size` threads for short units of work (`Database.in_worker`)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # A semaphore belongs to the loop it is used in: one per loop.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` on one of these threads; its answer, or what it raised."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.size)
        async with slots:  # cancelled while waiting here: the unit never runs
            context = contextvars.copy_context()
            future = self._pool().submit(context.run, _handed_over, loop, work)
            waiting = asyncio.wrap_future(future, loop=loop)
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                if current_effective_deadline() != -math.inf:
                    raise  # `Task.cancel()`: it interrupts the wait, as in anyio
            # A cancel scope's: anyio would have shielded the wait from the start. Entering
            # the shield only now keeps its cost off every other hand-off; inside it, the
            # scope stops sending its cancellation again on every pass of the loop.
            with CancelScope(shield=True):
                answer = await waiting
        return answer

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            return self._executor

    def close(self) -> None:
        """End the threads once their units are done; a later unit opens new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


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
