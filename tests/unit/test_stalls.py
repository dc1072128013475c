"""The shared freeze-check timer of relaying connections (helper/proxy/stalls.py), with
ProgressWatches fed by hand and no sockets."""

from __future__ import annotations

import asyncio

from helper.proxy.stalls import StallWatches
from helper.routing.progress import ProgressWatch

WAIT = 5.0  # a generous bound for what the timer does within a few ticks


def frozen(timeout: float, now: float) -> ProgressWatch:
    """A watch whose server stopped inside a TLS record: stalled once `timeout` passes."""
    watch = ProgressWatch(timeout, now)
    watch.received(bytes([23, 3, 3, 0x40, 0x00]) + b"\xaa" * 100, now)
    return watch


def idle(timeout: float, now: float) -> ProgressWatch:
    """A watch at a record boundary: never stalled."""
    watch = ProgressWatch(timeout, now)
    watch.received(bytes([23, 3, 3, 0, 4]) + b"abcd", now)
    return watch


def ticks(stalls: StallWatches, count: int) -> asyncio.Future[None]:
    """Done once the timer has ticked `count` more times (counted from now)."""
    done = asyncio.get_running_loop().create_future()
    tick = stalls._tick
    seen = 0

    def counting() -> None:
        nonlocal seen
        tick()
        seen += 1
        if seen >= count and not done.done():
            done.set_result(None)

    stalls._tick = counting  # type: ignore[method-assign]
    return done


async def test_one_timer_for_all_and_each_stall_told_once() -> None:
    loop = asyncio.get_running_loop()
    told: list[str] = []
    both = asyncio.Event()

    def on_stall(item: str, watch: ProgressWatch) -> None:
        assert watch.stalled is not None
        told.append(item)
        if len(told) == 2:
            both.set()

    stalls: StallWatches[str] = StallWatches(on_stall)
    now = loop.time()
    stalls.add(1, frozen(0.05, now), "a", loop)
    timer = stalls._timer
    stalls.add(2, idle(0.05, now), "b", loop)
    stalls.add(3, frozen(0.05, now), "c", loop)
    assert stalls._timer is timer  # one timer, armed once
    await asyncio.wait_for(both.wait(), WAIT)
    assert sorted(told) == ["a", "c"]
    assert len(stalls) == 1  # the stalled ones are not checked again; the idle one is
    # A few more ticks: nobody is told twice.
    await asyncio.wait_for(ticks(stalls, 3), WAIT)
    assert sorted(told) == ["a", "c"]
    stalls.discard(2)
    stalls.discard(2)  # gone already: nothing happens
    assert len(stalls) == 0


async def test_the_timer_stops_once_nobody_is_watched() -> None:
    loop = asyncio.get_running_loop()
    stalls: StallWatches[str] = StallWatches(lambda item, watch: None)
    fired = ticks(stalls, 1)
    stalls.add(1, idle(0.02, loop.time()), "a", loop)
    stalls.discard(1)  # left armed: the next connection need not arm it again
    assert stalls._timer is not None
    await asyncio.wait_for(fired, WAIT)
    assert stalls._timer is None  # it found nobody and stopped


async def test_a_shorter_timeout_rearms_sooner() -> None:
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    stalls: StallWatches[str] = StallWatches(lambda item, watch: told.set())
    now = loop.time()
    stalls.add(1, idle(3600.0, now), "slow", loop)
    stalls.add(2, frozen(0.05, now), "fast", loop)  # a reload lowered stall_timeout
    await asyncio.wait_for(told.wait(), WAIT)


async def test_one_failing_report_does_not_stop_the_others(caplog) -> None:
    loop = asyncio.get_running_loop()
    told: list[str] = []
    done = asyncio.Event()

    def on_stall(item: str, watch: ProgressWatch) -> None:
        if item == "bad":
            raise RuntimeError("broken")
        told.append(item)
        done.set()

    stalls: StallWatches[str] = StallWatches(on_stall)
    now = loop.time()
    stalls.add(1, frozen(0.05, now), "bad", loop)
    stalls.add(2, frozen(0.05, now), "good", loop)
    await asyncio.wait_for(done.wait(), WAIT)
    assert told == ["good"]
    assert "internal error" in caplog.text
