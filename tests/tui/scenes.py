"""Fixed scenes for the terminal UI's tests: an engine that is never started, built from the
configuration the lab writes, holding the probe results a lab scenario's expectations
describe, with fixed timings and a fixed clock -- so a screenshot is the same on every run
and every machine."""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.lab.hosts import DEFAULT_NETWORK, HostTable
from helper.lab.lab import helper_config
from helper.lab.scenario import Expectation, load_scenario
from helper.probe.diagnose import diagnose
from helper.probe.result import ProbeResult, Step, TargetResult
from helper.proxy.listener import ClientConnection
from helper.relay.keys import RelayKeys
from helper.services import ProbeTarget, Service
from transports import Endpoint, Failure, Op

if TYPE_CHECKING:
    from helper.tui.app import DetourApp

__all__ = ["MONOTONIC", "NOW", "fake_connection", "fixed_app", "lab_config", "scene"]

NOW = 1_800_000_000.0  # the scenes' wall clock
MONOTONIC = 5_000.0  # and their monotonic clock
PROBED = NOW - 12  # when the scenes' probes ran

_STEP_MS = {"resolve": 3.0, "connect": 1.0, "tls_handshake": 8.0, "http_round_trip": 2.0}
_OP_STEP = {
    Op.RESOLVE: "resolve",
    Op.CONNECT: "connect",
    Op.PROXY_HANDSHAKE: "connect",
    Op.TLS_HANDSHAKE: "tls_handshake",
    Op.HTTP_ROUND_TRIP: "http_round_trip",
}


def lab_config(listen: str = "127.0.0.1:1080") -> Config:
    """What `detour lab` writes, less the lab CA, with an access key to a relay that does not
    run (no lab runs for a scene)."""
    table = HostTable(ipaddress.IPv4Network(DEFAULT_NETWORK))
    with tempfile.TemporaryDirectory(prefix="detour-scene-") as state:
        keys = RelayKeys(Path(state))
        keys.generate()
        cdn = Endpoint(table.address("cdn"), 443)
        front = keys.add_client("scene", cdn, "cdn.lab.test", "relay.lab.test")
    text = helper_config(table, Path("/nonexistent/lab-ca.pem"), "scene", listen, front.encode())
    text = text.replace('extra_ca = ["/nonexistent/lab-ca.pem"]', "")
    return parse_config(text, "scene config")


def _steps(target: ProbeTarget, failing: str | None = None) -> list[Step]:
    kind = target.kind
    names = ["connect"] if target.endpoint.ip is not None else ["resolve", "connect"]
    if kind in ("tls", "https"):
        names.append("tls_handshake")
    if kind in ("http", "https"):
        names.append("http_round_trip")
    steps = []
    for name in names:
        steps.append(Step(name, _STEP_MS[name], name != failing))
        if name == failing:
            break
    return steps


def _failing_target(service: Service, op: Op) -> ProbeTarget:
    """The first target the failure can happen at: a TLS failure needs a TLS target."""
    kinds = ("tls", "https") if op is Op.TLS_HANDSHAKE else ("tcp", "tls", "http", "https")
    return next(t for t in service.probes if t.kind in kinds)


def _result(service: Service, route: str, chain: str, splits: bool, expect: Expectation):
    failing, failure, op = None, None, None
    if not expect.works and expect.failure:
        failure, op = Failure(expect.failure), Op(expect.op or "connect")
        failing = _failing_target(service, op)
    targets = []
    for target in service.probes:
        if target is failing and failure is not None and op is not None:
            result = TargetResult(str(target), steps=_steps(target, _OP_STEP.get(op)))
            result.fail(failure, op, "as the scenario says")
            if failure is Failure.STALLED:
                result.received = 16384
        else:
            result = TargetResult(str(target), steps=_steps(target))
            result.latency_ms = sum(s.ms for s in result.steps if s.name != "http_round_trip")
        targets.append(result)
    probe = ProbeResult(service.name, route, chain, targets, checked_at=PROBED)
    probe.diagnosis = diagnose(probe, splits)
    return probe


def scene(scenario: str, *, probing: tuple[str, ...] = (), connections: int = 0) -> Engine:
    """An engine holding what `scenario` expects its probes to report; services in `probing`
    have a probe running instead; `connections` fake client connections."""
    engine = Engine(lab_config(), probe_on_start=False)
    router, monitor = engine.router, engine.monitor
    for expect in load_scenario(scenario).expectations:
        service = next(s for s in router.services if s.name == expect.service)
        if service.name in probing:
            continue
        route = router.route(expect.route)
        result = _result(
            service, route.name, str(route.chain), route.chain.splits_client_hello, expect
        )
        monitor.results[(service.name, route.name)] = result
        router.health.record_probe(result)
    router.note_health_change("scene")
    for service in router.services:
        if service.name in probing:
            monitor.probing.add(service.name)
            for route in monitor.probe_routes(service):
                monitor.progress.start(service.name, route.name)
    for i in range(connections):
        fake_connection(engine, i + 1, started=MONOTONIC - 3.5 * (i + 1))
    return engine


def fake_connection(engine: Engine, n: int, *, started: float) -> ClientConnection:
    """A connection in the engine's table that no client made (the scene's n-th)."""
    hosts = ("web.telegram.org", "g.whatsapp.net", "chat.signal.org")
    services = ("telegram", "whatsapp", "signal")
    i = (n - 1) % 3
    conn = ClientConnection(
        n,
        f"127.0.0.1:{40000 + n - 1}",
        listener=engine.listener,
        protocol="socks5",
        target=Endpoint(hosts[i], 443),
        service=services[i],
        route="tls-fragment",
        started=started,
    )
    conn.stats.up, conn.stats.down = 517 * n, 48_213 * n
    engine.server.connections[conn.id] = conn
    return conn


def fixed_app(engine: Engine, **kwargs) -> DetourApp:
    """The app for a scene: the scene's clocks, and no machine addresses."""
    from helper.tui.app import DetourApp

    return DetourApp(
        engine,
        clock=lambda: NOW,
        monotonic=lambda: MONOTONIC,
        addresses=lambda: ["192.0.2.10"],
        **kwargs,
    )
