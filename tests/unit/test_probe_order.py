"""Probing a service's routes on a network detour has not seen: the routes first in the order
start first (a stagger apart, or at once when every route before has its verdict), and each
verdict is handed on as soon as it is known, so a route that works is used before the slow
routes' probes end."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from helper.probe.probe import Prober
from helper.probe.result import ProbeResult
from helper.probe.turns import turns
from helper.services import ProbeTarget

SERVICE = SimpleNamespace(name="telegram", probes=())


class TimedProber(Prober):
    """probe() takes the route's scripted time and works when the script says so."""

    def __init__(self, script: dict[str, tuple[float, bool]]) -> None:
        super().__init__()
        self.script = script
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()

    async def probe(self, service, route, *, passed=None) -> ProbeResult:  # type: ignore[override]
        self.started[route.name] = time.monotonic() - self.t0
        seconds, ok = self.script[route.name]
        await asyncio.sleep(seconds)
        result = ProbeResult(service.name, route.name, route.name, [])
        if not ok:
            result.targets = [_failed()]
        return result


def _failed():
    from helper.probe.result import TargetResult
    from transports import Failure, Op

    return TargetResult("x").fail(Failure.TIMEOUT, Op.CONNECT, "")


def routes(*names: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=n) for n in names]


async def test_later_routes_start_a_stagger_apart_and_verdicts_come_as_known() -> None:
    prober = TimedProber({"a": (1.0, False), "b": (0.05, True), "c": (0.05, True)})
    seen: list[tuple[str, float]] = []
    results = await prober.probe_service(
        SERVICE,
        routes("a", "b", "c"),
        stagger=0.2,
        on_result=lambda r: seen.append((r.route, time.monotonic() - prober.t0)),
    )
    assert [r.route for r in results] == ["a", "b", "c"]  # the routes' order
    assert prober.started["a"] < 0.1 and 0.15 < prober.started["b"] < 0.5
    assert 0.35 < prober.started["c"] < 0.8
    assert seen[0][0] == "b" and seen[0][1] < 0.6  # long before "a" has its verdict
    assert seen[-1][0] == "a"


async def test_a_route_starts_at_once_when_every_route_before_has_its_verdict() -> None:
    prober = TimedProber({"a": (0.0, False), "b": (0.0, False), "c": (0.0, True)})
    await prober.probe_service(SERVICE, routes("a", "b", "c"), stagger=5.0)
    assert prober.started["c"] < 1.0


class _Route(SimpleNamespace):
    def not_applicable(self, endpoint):
        return "not a DC" if self.dc_only and endpoint.host != "149.154.167.51" else None


def test_a_route_that_carries_no_target_takes_no_turn() -> None:
    web = ProbeTarget.parse("tls://web.whatsapp.com:443")
    dc = ProbeTarget.parse("mtproto://149.154.167.51:443")
    order = [
        _Route(name="direct", dc_only=False),
        _Route(name="tgws", dc_only=True),
        _Route(name="tgws-doh", dc_only=True),
        _Route(name="oob", dc_only=False),
    ]
    whatsapp = SimpleNamespace(name="whatsapp", probes=(web,))
    assert turns(whatsapp, order) == [0, None, None, 1]  # oob's turn comes second
    telegram = SimpleNamespace(name="telegram", probes=(web, dc))
    assert turns(telegram, order) == [0, 1, 2, 3]  # a DC target: every route has its turn
    assert turns(SimpleNamespace(name="x", probes=()), order) == [0, 1, 2, 3]


async def test_the_first_pass_starts_with_the_monitor_not_a_tick_later() -> None:
    from helper.config import parse_config
    from helper.engine import Engine
    from tests.conftest import config_text

    service = '[[service]]\nname = "telegram"\ndomains = ["t.me"]\nprobes = ["tcp://t.me:443"]\n'
    engine = Engine(parse_config(config_text(extra=service)), probe_on_start=False)
    started = asyncio.Event()

    class Recording:
        async def probe(self, service, route, *, passed=None) -> ProbeResult:
            started.set()
            return ProbeResult(service.name, route.name, route.name, [])

    engine.monitor.prober = Recording()
    try:
        await engine.monitor.start(probe_now=True)
        for _ in range(50):  # a few turns of the loop: far less than the monitor's tick
            if started.is_set():
                break
            await asyncio.sleep(0)
        assert started.is_set()
    finally:
        await engine.monitor.stop()
        await engine.stop()
