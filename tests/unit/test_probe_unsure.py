"""A freeze check that runs out of time while the answers still come is unsure, not a pass:
the prober checks once more with twice the time, and a verdict still unsure passes with its
diagnosis saying so (ranked after sure passes: test_health.py). No sockets: scripted streams
and targets."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from helper.probe.probe import Prober, _Failed
from helper.probe.result import TargetResult
from helper.probe.volume import ResponseCounter, settle
from helper.routing import Route
from helper.services import ProbeTarget
from transports import Failure, parse_chain
from transports.direct import DirectDialer

# The head of an answer that owes far more than it sends before the bytes stop.
PART = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 16_000


class Stalling:
    """A stream that sends `PART` at once, then nothing."""

    def __init__(self) -> None:
        self.sent = False

    async def read(self, n: int) -> bytes:
        if not self.sent:
            self.sent = True
            return PART
        await asyncio.Event().wait()
        return b""


async def test_out_of_time_while_bytes_still_came_is_unsure() -> None:
    prober = Prober(timeout=5.0)
    result = TargetResult("tls://x:443")
    # The probe's deadline comes 0.1 s after the last byte: too soon to call it a freeze.
    deadline = time.monotonic() + 0.35
    assert await prober._read_answers(Stalling(), ResponseCounter(), 1, result, deadline)
    assert result.freeze_unsure.startswith("freeze check unsure: out of time after 16")


async def test_bytes_that_stop_with_time_left_are_a_freeze() -> None:
    prober = Prober(timeout=5.0)
    prober.stall = 0.1  # the silence that makes a freeze, short for the test
    result = TargetResult("tls://x:443")
    with pytest.raises(_Failed) as failed:
        await prober._read_answers(Stalling(), ResponseCounter(), 1, result, time.monotonic() + 30)
    assert failed.value.error.failure is Failure.STALLED
    assert not result.freeze_unsure


class Scripted(Prober):
    """Targets' results in turn from `script`; records each call's timeout."""

    def __init__(self, script: list[TargetResult]) -> None:
        super().__init__(timeout=5.0)
        self.script = script
        self.timeouts: list[float | None] = []

    async def _probe_target(  # type: ignore[override]
        self, route, target, *, volume=False, service="", timeout=None, passing=None
    ) -> TargetResult:
        self.timeouts.append(timeout)
        return self.script.pop(0)


SERVICE = SimpleNamespace(name="whatsapp", probes=[ProbeTarget.parse("tls://web.whatsapp.com")])
ROUTE = Route("direct", parse_chain("direct"), DirectDialer())


def unsure() -> TargetResult:
    return TargetResult("tls://web.whatsapp.com:443", freeze_checked=False, freeze_unsure="why")


async def test_an_unsure_check_is_tried_once_more_with_twice_the_time() -> None:
    sure = TargetResult("tls://web.whatsapp.com:443", freeze_checked=True)
    prober = Scripted([unsure(), sure])
    result = await prober.probe(SERVICE, ROUTE)  # type: ignore[arg-type]
    assert prober.timeouts == [None, 10.0]
    assert result.ok and not result.freeze_unsure and result.diagnosis == ""


async def test_a_freeze_seen_the_second_time_fails_the_route() -> None:
    frozen = TargetResult("tls://web.whatsapp.com:443").fail(
        Failure.STALLED, parse_op("read"), "stopped after 16000 bytes"
    )
    result = await Scripted([unsure(), frozen]).probe(SERVICE, ROUTE)  # type: ignore[arg-type]
    assert not result.ok and result.failure is Failure.STALLED


async def test_a_second_check_that_fails_otherwise_leaves_the_first_unsure_pass() -> None:
    timeout = TargetResult("tls://web.whatsapp.com:443").fail(
        Failure.TIMEOUT, parse_op("tls_handshake"), "nothing more within 10.0s"
    )
    result = await Scripted([unsure(), timeout]).probe(SERVICE, ROUTE)  # type: ignore[arg-type]
    assert result.ok and result.freeze_unsure == "why"  # a loaded machine: still unsure


def test_settle_which_check_stands() -> None:
    first = unsure()
    sure = TargetResult("x", freeze_checked=True)
    frozen = TargetResult("x").fail(Failure.STALLED, parse_op("read"), "")
    reset = TargetResult("x").fail(Failure.CONNECTION_RESET, parse_op("tls_handshake"), "")
    again = unsure()
    assert settle(first, sure) is sure  # the window filled: a sure pass
    assert settle(first, frozen) is frozen  # the freeze seen: the route fails
    assert settle(first, again) is again  # unsure twice: passes, unsure
    assert settle(first, reset) is first  # says nothing of a freeze: the first stands


async def test_unsure_twice_passes_and_says_so() -> None:
    prober = Scripted([unsure(), unsure()])
    result = await prober.probe(SERVICE, ROUTE)  # type: ignore[arg-type]
    assert len(prober.timeouts) == 2  # once more, not again and again
    assert result.ok and result.freeze_unsure == "why" and result.diagnosis == "why"
    assert result.to_json()["targets"][0]["freeze_unsure"] is True


def parse_op(name: str):
    from transports import Op

    return Op(name)
