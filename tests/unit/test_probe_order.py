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

SERVICE = SimpleNamespace(name="telegram", probes=())


class TimedProber(Prober):
    """probe() takes the route's scripted time and works when the script says so."""

    def __init__(self, script: dict[str, tuple[float, bool]]) -> None:
        super().__init__()
        self.script = script
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()

    async def probe(self, service, route) -> ProbeResult:  # type: ignore[override]
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
    from helper.probe.probe import turns
    from helper.services import ProbeTarget

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
