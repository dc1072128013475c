"""Deadlines on one shared timer (transports/deadlines.py), with plain tasks: what times
out becomes TimeoutError, never before its deadline; what finishes in time or is cancelled
from elsewhere is left alone; the timer runs only while a deadline is pending."""

from __future__ import annotations

import asyncio

import pytest

from transports.deadlines import Deadlines

TICK = 0.02


async def test_a_block_that_takes_too_long_times_out_no_sooner_than_its_deadline() -> None:
    deadlines = Deadlines(tick=TICK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.after(0.1):
        await asyncio.Event().wait()
    assert loop.time() - started >= 0.1
    assert not deadlines._pending and deadlines._timer is None  # nothing left armed


async def test_a_block_done_in_time_is_left_alone() -> None:
    deadlines = Deadlines(tick=TICK)
    with deadlines.after(10) as deadline:
        await asyncio.sleep(0)
    assert not deadline.expired()
    assert not deadlines._pending
    await asyncio.sleep(2 * TICK)  # the tick after the block found nothing to do
    assert deadlines._timer is None


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(tick=TICK)
    entered = asyncio.Event()

    async def bounded() -> None:
        with deadlines.after(10):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(bounded())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._pending


async def test_many_tasks_share_one_timer_and_each_times_out_on_its_own() -> None:
    deadlines = Deadlines(tick=TICK)
    outcomes: dict[int, str] = {}
    release = asyncio.Event()
    five_timed_out = asyncio.Event()

    async def bounded(n: int, seconds: float) -> None:
        try:
            with deadlines.after(seconds):
                await release.wait()
            outcomes[n] = "done"
        except TimeoutError:
            outcomes[n] = "timed out"
            if len(outcomes) == 5:
                five_timed_out.set()

    tasks = [asyncio.ensure_future(bounded(n, 0.05 if n % 2 else 30)) for n in range(10)]
    await five_timed_out.wait()
    assert outcomes == dict.fromkeys(range(1, 10, 2), "timed out")
    release.set()
    await asyncio.gather(*tasks)
    assert outcomes == {n: "timed out" if n % 2 else "done" for n in range(10)}


async def test_async_with_works_as_asyncio_timeout_does() -> None:
    deadlines = Deadlines(tick=TICK)
    deadline = deadlines.after(0.05)
    with pytest.raises(TimeoutError):
        async with deadline:
            await asyncio.Event().wait()
    assert deadline.expired()


async def test_an_inner_asyncio_timeout_keeps_its_own_meaning() -> None:
    deadlines = Deadlines(tick=TICK)
    with deadlines.after(10) as outer, pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()
    assert not outer.expired()


def test_a_deadline_needs_a_task() -> None:
    async def outside() -> None:
        deadlines = Deadlines()
        deadline = deadlines.after(1)
        deadline.task = None

        def enter() -> None:
            with deadline:
                pass

        # A callback of the loop runs in no task.
        future = asyncio.get_running_loop().create_future()

        def run() -> None:
            try:
                enter()
            except RuntimeError as exc:
                future.set_result(str(exc))

        asyncio.get_running_loop().call_soon(run)
        assert "inside one" in await future

    asyncio.run(outside())
