"""`kit/unit_threads.py`: the hand-off of short units of work keeps anyio's contract."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

from sessionary.kit.loop_units import from_worker
from sessionary.kit.unit_threads import UnitThreads, call_on_loop, handed_by

REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture
def threads() -> Iterator[UnitThreads]:
    pool = UnitThreads(2, "test-units")
    yield pool
    pool.close()


def test_at_most_size_run_at_once_and_the_rest_wait_for_a_thread(threads: UnitThreads) -> None:
    running = peak = 0
    lock = threading.Lock()
    release = threading.Event()
    began: list[int] = []

    def unit(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            began.append(n)
        release.wait(5)
        with lock:
            running -= 1
        return n * 10

    async def main() -> list[int]:
        tasks = [asyncio.create_task(threads.run(functools.partial(unit, n))) for n in range(6)]
        await asyncio.sleep(0.2)
        assert running == 2  # four wait for a thread
        release.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert peak == 2
    assert sorted(began) == list(range(6))


def test_the_unit_sees_its_callers_context_and_its_errors_reach_the_caller(
    threads: UnitThreads,
) -> None:
    def failing() -> None:
        raise ValueError(f"failed for {REQUEST.get()}")

    async def main() -> tuple[str, str]:
        REQUEST.set("req_1")
        seen = await threads.run(REQUEST.get)
        with pytest.raises(ValueError, match="failed for req_1") as caught:
            await threads.run(failing)
        return seen, str(caught.value)

    assert asyncio.run(main())[0] == "req_1"


def test_a_caller_cancelled_before_its_unit_began_never_runs_it(threads: UnitThreads) -> None:
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        busy = [asyncio.create_task(threads.run(lambda: release.wait(5))) for _ in range(2)]
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(threads.run(lambda: ran.append("queued")))
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await asyncio.gather(*busy)
        await threads.run(lambda: None)  # every thread free again: the cancelled unit is gone

    asyncio.run(main())
    assert ran == []


def test_a_cancel_scopes_caller_waits_for_its_unit_gets_its_answer_and_spins_not(
    threads: UnitThreads,
) -> None:
    """Cancelled by a cancel scope (Starlette's, a task group's) once its unit began: as with
    anyio, the caller waits for the unit's end without burning the loop (the scope sends its
    cancellation again on every pass: caught and awaited again, that took a core for as long
    as the unit ran; found by an adversary review), gets the unit's answer (a hold taken is
    not lost on the way back), and is cancelled at its next await."""
    began = threading.Event()

    def unit() -> str:
        began.set()
        time.sleep(0.5)
        return "held"

    async def main() -> tuple[str, bool, float]:
        got = "nothing"
        reached_next_await = False
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:

                async def cancel_once_begun() -> None:
                    await anyio.to_thread.run_sync(began.wait, 5)
                    scope.cancel()

                group.start_soon(cancel_once_begun)
                cpu = time.process_time()
                got = await threads.run(unit)
                cpu = time.process_time() - cpu
                reached_next_await = True
                await anyio.sleep(1)  # the cancellation comes here
                reached_next_await = False
        return got, reached_next_await, cpu

    got, reached, cpu = asyncio.run(main())
    assert got == "held" and reached
    assert cpu < 0.25  # 0.5 s of waiting: a spinning loop spends about all of it


def test_a_plain_task_cancel_interrupts_the_wait_at_once(threads: UnitThreads) -> None:
    """`Task.cancel()` once the unit began interrupts the caller's wait at once, as anyio's;
    the unit runs on to its end."""
    began, ended = threading.Event(), threading.Event()

    def unit() -> None:
        began.set()
        time.sleep(0.3)
        ended.set()

    async def main() -> bool:
        task = asyncio.create_task(threads.run(unit))
        await asyncio.to_thread(began.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ended.is_set()

    assert asyncio.run(main()) is False
    assert ended.wait(5)


def test_a_unit_calls_its_callers_loop(threads: UnitThreads) -> None:
    loop: asyncio.AbstractEventLoop | None = None

    async def on_the_loop(x: int) -> tuple[int, bool]:
        return x + 1, asyncio.get_running_loop() is loop

    def unit() -> tuple[tuple[int, bool], tuple[int, bool], bool]:
        assert handed_by() is loop
        return call_on_loop(on_the_loop, 1), from_worker(on_the_loop, 2), True

    async def main() -> tuple[tuple[int, bool], tuple[int, bool], bool]:
        nonlocal loop
        loop = asyncio.get_running_loop()
        return await threads.run(unit)

    assert asyncio.run(main()) == ((2, True), (3, True), True)
    assert handed_by() is None
    with pytest.raises(RuntimeError, match="call_on_loop"):
        call_on_loop(on_the_loop, 1)


def test_closed_threads_open_again_for_the_next_unit(threads: UnitThreads) -> None:
    """An app's lifespan may run twice (two test clients of one app): the second's units run
    (they were 500s when closing was for good; found by an adversary review)."""
    assert asyncio.run(threads.run(lambda: 1)) == 1
    threads.close()
    assert asyncio.run(threads.run(lambda: 2)) == 2
