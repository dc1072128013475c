"""A route's early verdict (helper/probe/passing.py): once every target it carries has passed
all but the freeze check, the route is handed on as working -- ranked as an unsure pass --
while the check runs; the full verdict follows and a freeze it sees fails the route. Only a
route not yet known takes the early verdict. No sockets: scripted targets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.probe.passing import CHECKING, Passing
from helper.probe.probe import Prober, _checking, _Failed
from helper.probe.result import ProbeResult, TargetResult
from helper.routing import Route
from helper.services import ProbeTarget
from tests.conftest import config_text
from transports import DialError, Failure, Op, parse_chain
from transports.direct import DirectDialer

# --- the count, sans-IO -------------------------------------------------------------------


def test_fires_once_when_every_target_passed_and_the_check_runs() -> None:
    fired: list[list[TargetResult]] = []
    passing = Passing(3, fired.append)
    checked = TargetResult("tls://a:443")
    passing.passed(1, checked, checking=True)
    passing.passed(0, TargetResult("tcp://b:1"))
    assert fired == []  # the third target has not passed yet
    passing.passed(2, TargetResult("mtproto://c:443"))
    assert len(fired) == 1
    copies = fired[0]
    assert [t.target for t in copies] == ["tcp://b:1", "tls://a:443", "mtproto://c:443"]
    assert copies[1].freeze_unsure == CHECKING and copies[1].freeze_checked is False
    assert copies[1] is not checked and checked.freeze_unsure == ""  # the probe's own goes on
    passing.passed(2, TargetResult("mtproto://c:443"))
    assert len(fired) == 1


def test_never_fires_when_a_target_fails_or_after_the_check() -> None:
    fired: list[list[TargetResult]] = []
    failing = Passing(2, fired.append)
    failing.passed(0, TargetResult("tls://a:443"), checking=True)  # target 1 never reports
    ended = Passing(2, fired.append)
    ended.passed(0, TargetResult("tls://a:443"), checking=True)
    ended.checked()  # the check ended first: the full verdict is as soon
    ended.passed(1, TargetResult("tcp://b:1"))
    assert fired == []


# --- the prober: the early verdict, then the full one ----------------------------------------


class Staged(Prober):
    """Targets that pass at once; the freeze check waits for `release`, then freezes or not."""

    def __init__(self, *, freeze: bool, fail: str = "") -> None:
        super().__init__(timeout=30.0)
        self.freeze = freeze
        self.fail = fail  # a target that fails before any check
        self.release = asyncio.Event()

    async def _run(  # type: ignore[override]
        self, route, target, result, step, volume=False, timeout=0.0, passing=None
    ) -> None:
        if str(target) == self.fail:
            raise _Failed(DialError(Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE, "reset"))
        if not volume:
            return
        _checking(step, result, passing)
        result.freeze_checked = False
        await self.release.wait()
        if self.freeze:
            raise _Failed(DialError(Failure.STALLED, Op.READ, "stopped after 16000 bytes"))
        result.freeze_checked = True


SERVICE = SimpleNamespace(
    name="whatsapp",
    probes=[ProbeTarget.parse("tcp://g.whatsapp.net:5222"), ProbeTarget.parse("tls://web.x:443")],
)
ROUTE = Route("direct", parse_chain("direct"), DirectDialer())


@pytest.mark.parametrize("freeze", [False, True])
async def test_the_route_works_early_and_the_check_decides_after(freeze: bool) -> None:
    prober = Staged(freeze=freeze)
    early: list[ProbeResult] = []
    task = asyncio.ensure_future(prober.probe(SERVICE, ROUTE, passed=early.append))
    for _ in range(100):
        if early:
            break
        await asyncio.sleep(0)
    assert len(early) == 1 and not task.done()
    assert early[0].ok and early[0].freeze_unsure == CHECKING
    assert early[0].diagnosis == CHECKING
    prober.release.set()
    final = await task
    assert final.ok is not freeze
    if freeze:
        assert final.failure is Failure.STALLED  # the freeze is seen, the route fails
    assert len(early) == 1


async def test_no_early_verdict_when_a_target_fails() -> None:
    prober = Staged(freeze=False, fail="tcp://g.whatsapp.net:5222")
    prober.release.set()
    early: list[ProbeResult] = []
    final = await prober.probe(SERVICE, ROUTE, passed=early.append)
    assert early == [] and not final.ok


# --- the monitor: only a route not yet known takes it -----------------------------------------

TELEGRAM = """
[[service]]
name = "telegram"
domains = ["telegram.org"]
probes = ["tls://web.telegram.org:443"]
"""


def passed(route: str) -> ProbeResult:
    target = TargetResult("tls://web.telegram.org:443", freeze_checked=False)
    target.freeze_unsure = CHECKING
    return ProbeResult("telegram", route, route, [target], diagnosis=CHECKING)


async def test_an_early_pass_ranks_an_unknown_route_but_not_a_known_one() -> None:
    text = config_text(routes={"a": "direct", "b": "direct", "c": "direct"}, extra=TELEGRAM)
    engine = Engine(parse_config(text), probe_on_start=False)
    try:
        monitor, health = engine.monitor, engine.router.health
        sure = ProbeResult("telegram", "a", "a", [TargetResult("x", freeze_checked=True)])
        health.record_probe(sure)
        failing = ProbeResult("telegram", "b", "b", [TargetResult("x")])
        failing.targets[0].fail(Failure.STALLED, Op.READ, "froze")
        health.record_probe(failing)
        for route in ("a", "b", "c"):
            monitor._passed(passed(route), None)
        assert health.get("telegram", "a").freeze_unsure is False  # a sure pass stays sure
        assert health.get("telegram", "b").ok is False  # a failing route is not ranked up
        c = health.get("telegram", "c")
        assert c.ok and c.freeze_unsure  # unknown until now: used, after the sure pass
        routes = [SimpleNamespace(name=n) for n in ("c", "b", "a")]
        assert [r.name for r in health.order("telegram", routes)] == ["a", "c", "b"]
    finally:
        await engine.stop()


async def test_an_early_pass_whose_check_never_ended_is_not_remembered(tmp_path) -> None:
    from helper.routing.state import HealthStore

    text = config_text(routes={"a": "direct"}, extra=TELEGRAM)
    store = HealthStore(tmp_path / "health.json")
    engine = Engine(parse_config(text), probe_on_start=False, store=store, network="net")
    try:
        engine.monitor._passed(passed("a"), None)  # the engine stops before the full verdict
        assert engine.router.health.get("telegram", "a").ok
        await engine.monitor.stop()
        assert engine.router.health.get("telegram", "a").ok is None
        assert "a" not in (store._read().get("net", {}).get("routes", {}).get("telegram") or {})
    finally:
        await engine.stop()
