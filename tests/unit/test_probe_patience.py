"""A probe's patience (helper/probe/patience.py): deadlines stretched by the time the event loop
lost, the target's own progress and the steps other targets completed -- bounded, and never
shorter than configured; a quiet machine's deadlines untouched. No sockets: the meter is fed
its ticks' times, and a Patience whose measurements the test sets."""

from __future__ import annotations

import asyncio
import time

import pytest

from helper.config import ConfigError, parse_config
from helper.probe.patience import (
    LAG_FLOOR,
    MAX_PATIENCE,
    NET_STEPS,
    PERIOD,
    PROGRESS,
    LagMeter,
    Patience,
    allowed,
    median,
    quiet,
)
from helper.probe.probe import Prober, _Failed, wait_turn
from helper.probe.result import TargetResult
from helper.probe.volume import ResponseCounter
from helper.routing.route import Route
from helper.services import ProbeTarget
from transports import DialError, Endpoint, Failure, Op
from transports.chain import parse_chain
from transports.deadlines import machine


def test_nothing_measured_leaves_the_deadline_as_configured() -> None:
    assert allowed(5.0) == 5.0
    assert allowed(5.0, lost=0.0, done=2.5, typical=1.25) == 5.0  # a quiet machine's steps
    assert allowed(10.0, patience=1.0, lost=30.0, done=20.0, typical=9.0) == 10.0  # off


def test_the_loop_time_lost_is_added() -> None:
    assert allowed(5.0, lost=1.5) == 6.5


def test_a_slow_step_of_its_own_gives_the_target_time_for_the_next() -> None:
    # A tgws dial that took 4.4 s of the 5 s: the MTProto exchange gets its time too.
    assert allowed(5.0, done=4.4) == pytest.approx(PROGRESS * 4.4)


def test_slow_steps_elsewhere_give_every_target_more_time() -> None:
    assert allowed(5.0, typical=2.0) == NET_STEPS * 2.0


def test_never_more_than_patience_times_nor_less_than_configured() -> None:
    assert allowed(5.0, lost=100.0) == MAX_PATIENCE * 5.0
    assert allowed(5.0, done=100.0, patience=2.0) == 10.0
    assert allowed(5.0, lost=-3.0) == 5.0


def test_median() -> None:
    assert median([]) == 0.0
    assert median([3.0]) == 3.0
    assert median([5.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_the_meter_counts_only_what_is_later_than_its_floor() -> None:
    meter = LagMeter()
    due = meter.start(100.0)
    for _ in range(50):  # on time, or a few ms late: a quiet machine
        due = meter.tick(due + LAG_FLOOR / 2)
    assert meter.lost == 0.0
    due = meter.tick(due + 0.5)  # a callback held the loop for half a second
    assert meter.lost == pytest.approx(0.5 - LAG_FLOOR)
    assert due == pytest.approx(meter.due)


def test_the_meter_counts_a_tick_that_is_overdue_now() -> None:
    # The loop is blocked right now: its tick has not run, but the time is lost already.
    meter = LagMeter()
    due = meter.start(0.0)
    assert meter.lost_at(due + 1.0) == pytest.approx(1.0 - LAG_FLOOR)
    assert meter.lost == 0.0
    meter.stop(due + 1.0)
    assert meter.lost == pytest.approx(1.0 - LAG_FLOOR)
    assert meter.lost_at(due + 5.0) == meter.lost  # stopped: nothing more counts


class Measured(Patience):
    """A Patience whose lost time and typical step the test sets."""

    def __init__(self, patience: float = MAX_PATIENCE) -> None:
        super().__init__(patience)
        self.lost_now = 0.0
        self.typical_now = 0.0

    def lost(self) -> float:
        return self.lost_now

    def typical(self) -> float:
        return self.typical_now


async def test_a_deadline_without_lag_falls_due_as_configured() -> None:
    patience = Measured()
    deadline = patience.deadline(0.05)
    with pytest.raises(TimeoutError):
        async with deadline:
            await asyncio.Event().wait()
    assert not deadline.stretched
    assert deadline.total() == 0.05


async def test_a_deadline_that_falls_due_after_lost_time_is_moved_then_kept() -> None:
    patience = Measured()
    deadline = patience.deadline(0.05)
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, lambda: setattr(patience, "lost_now", 0.05))  # the loop lost 50 ms
    with pytest.raises(TimeoutError):
        async with deadline:
            await asyncio.Event().wait()
    assert deadline.stretched
    assert deadline.total() == pytest.approx(0.1)
    assert loop.time() - deadline.start >= 0.1 - 0.01


async def test_work_that_ends_within_the_stretched_deadline_is_not_cut() -> None:
    patience = Measured()
    patience.lost_now = 0.0
    deadline = patience.deadline(0.05)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, lambda: setattr(patience, "lost_now", 1.0))
    loop.call_later(0.08, done.set)  # after the configured 50 ms, well within 1.05 s
    async with deadline:
        await done.wait()
    assert deadline.stretched


async def test_the_meter_runs_only_while_targets_run() -> None:
    patience = Patience()
    patience.acquire()
    patience.acquire()
    assert patience._timer is not None
    patience.release()
    assert patience._timer is not None
    patience.release()
    assert patience._timer is None and patience.meter.due is None
    off = Patience(1.0)
    off.acquire()
    assert off._timer is None  # patience 1: nothing to measure
    off.release()


async def test_a_blocked_loop_is_measured() -> None:
    # A blocking callback holds the loop: the time it held it is lost time.
    patience = Patience()
    patience.acquire()
    mark = patience.lost()
    blocked = asyncio.Event()

    def block() -> None:
        time.sleep(0.3)
        blocked.set()

    asyncio.get_running_loop().call_later(PERIOD / 2, block)
    await blocked.wait()
    lost = patience.lost() - mark
    patience.release()
    assert lost >= 0.3 - PERIOD - LAG_FLOOR


def test_the_prober_keeps_its_configured_deadlines() -> None:
    prober = Prober(timeout=5.0)
    assert prober.patience.patience == MAX_PATIENCE
    deadline = prober.patience.deadline(prober.timeout)
    assert deadline.total() == prober.timeout  # nothing measured: as configured
    assert prober.patience.most(5.0) == MAX_PATIENCE * 5.0


def test_silence_less_the_lost_time() -> None:
    prober = Prober()
    prober.patience = Measured()
    last = time.monotonic() - 3.0
    assert prober._silence(last, 0.0) >= 3.0
    prober.patience.lost_now = 2.5  # type: ignore[attr-defined]
    assert 0.5 <= prober._silence(last, 0.0) < 1.0
    prober.patience.lost_now = 10.0  # type: ignore[attr-defined]
    assert prober._silence(last, 0.0) == 0.0


ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'


def test_the_config_key() -> None:
    assert parse_config(ROUTE).probe.patience == MAX_PATIENCE
    assert parse_config("[probe]\npatience = 1\n" + ROUTE).probe.patience == 1.0
    assert parse_config("[probe]\npatience = 2.5\n" + ROUTE).probe.patience == 2.5
    for bad in ("0.5", "11", '"3"', "true"):
        with pytest.raises(ConfigError, match="patience"):
            parse_config(f"[probe]\npatience = {bad}\n" + ROUTE)


PART = b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + b"x" * 16_000
REST = b"x" * 14_000


class Late:
    """Sends PART, then REST only once `go` is set (a read cancelled meanwhile loses
    nothing), then nothing."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.parts = [PART, REST]

    async def read(self, n: int) -> bytes:
        if len(self.parts) == 1:
            await self.go.wait()
        if not self.parts:
            await asyncio.Event().wait()
        return self.parts.pop(0)


async def test_a_silence_while_the_loop_lost_time_is_no_freeze() -> None:
    prober = Prober(timeout=5.0)
    prober.stall = 0.1
    prober.patience = Measured()
    stream = Late()
    loop = asyncio.get_running_loop()
    # The loop "loses" the silence's time (what a blocked loop's meter reports), then the
    # rest of the answer comes: the check goes on reading and sees it whole.
    loop.call_later(0.02, lambda: setattr(prober.patience, "lost_now", 10.0))
    loop.call_later(0.3, stream.go.set)
    result = TargetResult("tls://x:443")
    await prober._read_answers(stream, ResponseCounter(), 1, result, time.monotonic() + 30)
    assert result.received == len(PART) + len(REST) and not result.freeze_unsure

    # The same silence with no time lost: a freeze, as before.
    prober.patience = Measured()
    stream = Late()
    loop.call_later(0.3, stream.go.set)
    with pytest.raises(_Failed) as failed:
        await prober._read_answers(
            stream, ResponseCounter(), 1, TargetResult("x"), time.monotonic() + 30
        )
    assert failed.value.error.failure is Failure.STALLED


# --- the timeouts inside a target's dial, and the turns, grow from the same measure -------


class Recording:
    """A dialer that records the measure in its context (transports.deadlines.machine)
    and then fails its dial."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def dial(self, target: Endpoint) -> None:
        self.seen.append(machine.get())
        raise DialError(Failure.CONNECTION_REFUSED, Op.CONNECT, "refused")


async def test_a_targets_dial_runs_with_the_probers_measure_and_only_it() -> None:
    prober = Prober(timeout=5.0)
    dialer = Recording()
    route = Route("r", parse_chain("direct"), dialer, timeout=10.0)  # type: ignore[arg-type]
    result = await prober._probe_target(route, ProbeTarget.parse("tcp://192.0.2.1:443"))
    assert result.failure is Failure.CONNECTION_REFUSED
    assert dialer.seen == [prober.patience]
    assert machine.get() is None  # the caller's context is left as it was
    off = Prober(timeout=5.0, patience=1.0)  # patience 1: timeouts stay as configured
    await off._probe_target(route, ProbeTarget.parse("tcp://192.0.2.1:443"))
    assert dialer.seen[-1] is None


async def test_a_turn_grows_with_the_time_the_loop_lost_while_it_waited() -> None:
    patience = Measured(patience=100.0)  # (a wide margin: the test's loop may be slow too)
    loop = asyncio.get_running_loop()
    finished = [asyncio.Event(), asyncio.Event()]
    loop.call_later(0.01, lambda: setattr(patience, "lost_now", 1.0))
    later = asyncio.ensure_future(wait_turn(1, finished, 0.05, patience))
    await asyncio.sleep(0.15)  # the stagger (50 ms) has passed: the loop lost 1 s of it
    assert not later.done()
    finished[0].set()  # every route before it has its verdict: its turn, at once
    await later
    # Nothing lost: a stagger after the first, as configured.
    started = loop.time()
    await wait_turn(1, [asyncio.Event()], 0.05, Measured())
    assert loop.time() - started >= 0.05 - 0.01


def test_a_freezes_silence_grows_with_the_steps_other_targets_took() -> None:
    assert quiet(2.0) == 2.0  # nothing measured: as configured
    assert quiet(2.0, typical=0.1) == 2.0  # a quick network's connects
    assert quiet(2.0, typical=1.0) == NET_STEPS * 1.0  # connects of 1 s: 4 s of silence
    assert quiet(2.0, typical=30.0) == MAX_PATIENCE * 2.0  # bounded
    assert quiet(2.0, typical=30.0, patience=1.0) == 2.0
    patience = Measured()
    assert patience.silence(2.0) == 2.0
    patience.typical_now = 1.0
    assert patience.silence(2.0) == NET_STEPS * 1.0
    off = Measured(patience=1.0)
    off.typical_now = 1.0
    assert off.silence(2.0) == 2.0
