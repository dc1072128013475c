"""Deadlines on one shared timer (transports/deadlines.py), with plain tasks: what times
out becomes TimeoutError, never before its deadline; what finishes in time or is cancelled
from elsewhere is left alone; the timer runs only while a deadline is pending."""

from __future__ import annotations

import asyncio

import pytest

from transports.deadlines import (
    Deadlines,
    Patient,
    PatientDeadlines,
    machine,
    patient,
    stretched,
)

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


# --- timeouts that grow with the time the machine lost (patient) -------------------------


class Lost:
    """A measure of the loop's lost time that the test sets."""

    def __init__(self, patience: float = 3.0) -> None:
        self.patience = patience
        self.now = 0.0

    def lost(self) -> float:
        return self.now


def test_stretched_adds_the_lost_time_within_its_bounds() -> None:
    assert stretched(5.0, 0.0, 3.0) == 5.0  # nothing lost: as configured
    assert stretched(5.0, 1.5, 3.0) == 6.5
    assert stretched(5.0, 100.0, 3.0) == 15.0  # at most patience x
    assert stretched(5.0, 100.0, 1.0) == 5.0  # patience 1: never more
    assert stretched(5.0, -2.0, 3.0) == 5.0  # never less


async def test_without_a_measure_in_the_context_a_patient_timeout_is_asyncios() -> None:
    assert machine.get() is None
    assert isinstance(patient(1.0), asyncio.Timeout)
    token = machine.set(Lost(patience=1.0))
    try:
        assert isinstance(patient(1.0), asyncio.Timeout)  # patience 1: nothing grows
    finally:
        machine.reset(token)
    with pytest.raises(TimeoutError):
        async with patient(0.02):
            await asyncio.Event().wait()


async def test_a_patient_timeout_grows_by_the_time_lost_while_it_ran() -> None:
    source = Lost(patience=100.0)  # (a wide margin: the test's loop may be slow too)
    source.now = 7.0  # lost before it started: not its own
    token = machine.set(source)
    try:
        timeout = patient(0.05)
    finally:
        machine.reset(token)
    assert isinstance(timeout, Patient)
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, lambda: setattr(source, "now", 8.0))  # the loop lost 1 s
    done = asyncio.Event()
    loop.call_later(0.08, done.set)  # after the 50 ms configured, within the 1.05 s grown
    async with timeout:
        await done.wait()
    assert timeout.stretched and not timeout.expired()
    assert timeout.total() == pytest.approx(1.05)


async def test_a_patient_timeout_still_ends_and_no_later_than_patience_allows() -> None:
    source = Lost(patience=2.0)
    timeout = Patient(0.05, source)
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, lambda: setattr(source, "now", 10.0))
    with pytest.raises(TimeoutError):
        async with timeout:
            await asyncio.Event().wait()
    assert timeout.expired()
    assert timeout.total() == pytest.approx(0.1)  # 2 x 0.05, not 10.05
    assert loop.time() - timeout.start >= 0.1 - 0.01


async def test_nothing_lost_falls_due_as_configured() -> None:
    timeout = Patient(0.05, Lost())
    with pytest.raises(TimeoutError):
        async with timeout:
            await asyncio.Event().wait()
    assert not timeout.stretched and timeout.expired()


async def test_patient_deadlines_give_a_routes_timeout_the_same_growth() -> None:
    # Route.dial's `deadlines`: after(seconds) is patient(seconds).
    source = Lost()
    token = machine.set(source)
    try:
        assert isinstance(PatientDeadlines().after(1.0), Patient)
    finally:
        machine.reset(token)
    assert isinstance(PatientDeadlines().after(1.0), asyncio.Timeout)
