"""Waiting in tests for a condition that no event announces (a counter on a server object),
and how late the event loop runs while a test measures time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    """The worst lateness of this event loop's wake-ups while the block runs. A tap (or a lab
    censor) that shares the loop with the engine sees a ClientHello up to that late: on a
    busy machine two paced handshakes can look closer there than the budget let them go."""
    loop = asyncio.get_running_loop()
    worst = [0.0]

    async def tick() -> None:
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], loop.time() - due)

    task = asyncio.ensure_future(tick())
    try:
        yield worst
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
