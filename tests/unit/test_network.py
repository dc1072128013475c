"""Offline or censored, without sockets: the verdict from what was seen (service probes,
control targets, the route lookup), what a probe result says while the network is down, the
watch's measurements and its wait for the network to come back (with a scripted route
lookup and control connect), the config key, and how the status API, the metrics and the
terminal UI's model show it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from helper.api import health, status_document
from helper.config import ConfigError, parse_config
from helper.engine import Engine
from helper.metrics import Metrics
from helper.probe.network import (
    OFFLINE,
    ONLINE,
    UNKNOWN,
    Evidence,
    NetworkWatch,
    RouteState,
    answered,
    controls_for,
    offline_result,
    verdict,
)
from helper.probe.result import ProbeResult, Step, TargetResult
from helper.status import NetworkView
from helper.tui import model
from tests.conftest import config_text
from transports import Endpoint, Failure, Op

ROUTED = RouteState(True, ("192.0.2.2",))
NO_ROUTE = RouteState(False)
DOWN = NetworkView(OFFLINE, "nothing answers: no service, no DNS, no control target", 1.0)


def result(*steps: tuple[str, bool], failure: Failure | None = None, op: Op | None = None):
    target = TargetResult("tls://web.telegram.org:443")
    target.steps = [Step(name, 1.0, ok) for name, ok in steps]
    if failure is not None and op is not None:
        target.fail(failure, op, "")
    outcome = ProbeResult("telegram", "direct", "direct", [target])
    outcome.diagnosis = "the resolver says the name does not exist: DNS blocking"
    return outcome


NXDOMAIN = result(("resolve", False), failure=Failure.DNS_NXDOMAIN, op=Op.RESOLVE)
BLACK_HOLED = result(("connect", False), failure=Failure.TIMEOUT, op=Op.CONNECT)
SNI_RESET = result(
    ("resolve", True),
    ("connect", True),
    ("tls_handshake", False),
    failure=Failure.CONNECTION_RESET,
    op=Op.TLS_HANDSHAKE,
)


@pytest.mark.parametrize(
    ("evidence", "state"),
    [
        (Evidence(services=True), ONLINE),
        (Evidence(False, (False, True), ROUTED), ONLINE),  # one control answers
        (Evidence(False, (False, False), ROUTED), OFFLINE),  # nothing answers
        (Evidence(False, (), NO_ROUTE), OFFLINE),  # no route at all
        (Evidence(None, (), NO_ROUTE), OFFLINE),
        (Evidence(False, (), ROUTED), UNKNOWN),  # no controls to ask
        (Evidence(), UNKNOWN),
        (Evidence(True, (False,), NO_ROUTE), ONLINE),  # a service answered: it is up
    ],
)
def test_the_verdict(evidence: Evidence, state: str) -> None:
    assert verdict(evidence, now=5.0).state == state


def test_an_offline_verdict_says_why() -> None:
    assert "no route" in verdict(Evidence(False, (), NO_ROUTE)).reason
    assert verdict(Evidence(False, (False,), ROUTED)).reason == DOWN.reason


def test_what_counts_as_an_answer() -> None:
    assert not answered(NXDOMAIN)  # a resolver with no network may say "no such name"
    assert not answered(BLACK_HOLED)
    assert answered(SNI_RESET)  # connected, then reset: the network works, DPI does not
    assert answered(result(("resolve", True), ("connect", False), failure=Failure.TIMEOUT,
                           op=Op.CONNECT))  # fmt: skip


def test_an_offline_result_blames_no_censor_and_keeps_what_was_measured() -> None:
    changed = offline_result(NXDOMAIN, DOWN)
    assert changed.diagnosis == f"offline: {DOWN.reason}"
    assert "DNS" not in changed.diagnosis.replace("no DNS", "")
    assert changed.failure is Failure.DNS_NXDOMAIN and changed.op is Op.RESOLVE
    assert NXDOMAIN.diagnosis.endswith("DNS blocking")  # the original is not changed
    works = ProbeResult("telegram", "direct", "direct", [TargetResult("tcp://x:1")])
    assert offline_result(works, DOWN) is works


class Network:
    """A scripted network: whether a route exists, which control targets answer."""

    def __init__(self, routed: bool = False, answering: set[str] | None = None) -> None:
        self.routed = routed
        self.answering = answering or set()
        self.lookups = 0
        self.connects: list[str] = []

    def lookup(self) -> RouteState:
        self.lookups += 1
        return RouteState(True, ("10.0.0.2",)) if self.routed else NO_ROUTE

    async def connect(self, target: Endpoint, timeout: float) -> bool:
        self.connects.append(target.host)
        await asyncio.sleep(0)
        return target.host in self.answering


CONTROLS = (Endpoint("198.51.100.1", 443), Endpoint("198.51.100.2", 443))


def watch(network: Network, controls=CONTROLS) -> NetworkWatch:
    return NetworkWatch(controls, poll=0.01, lookup=network.lookup, connect=network.connect)


@contextlib.asynccontextmanager
async def watching(network: Network, controls=CONTROLS) -> AsyncIterator[NetworkWatch]:
    """watch(), closed at the end."""
    w = watch(network, controls)
    try:
        yield w
    finally:
        await w.aclose()


async def test_a_probe_that_got_an_answer_needs_no_measurement() -> None:
    network = Network()
    w = watch(network)
    assert (await w.assess([NXDOMAIN, SNI_RESET])).state == ONLINE
    assert network.lookups == 0 and network.connects == []


async def test_no_route_is_offline_without_asking_the_controls() -> None:
    network = Network(routed=False)
    async with watching(network) as w:
        assert (await w.assess([NXDOMAIN])).state == OFFLINE
        assert network.connects == []
        assert w.state.offline


async def test_silent_controls_are_offline_one_answering_is_online() -> None:
    network = Network(routed=True)
    async with watching(network) as w:
        assert (await w.assess([BLACK_HOLED])).state == OFFLINE
        assert network.connects == ["198.51.100.1", "198.51.100.2"]
        network.answering = {"198.51.100.2"}
        assert (await w.assess([BLACK_HOLED])).state == ONLINE


async def test_services_probed_together_share_one_measurement() -> None:
    network = Network(routed=True)
    async with watching(network) as w:
        states = await asyncio.gather(*(w.assess([BLACK_HOLED]) for _ in range(5)))
        assert {s.state for s in states} == {OFFLINE}
        assert network.lookups <= 2  # one measurement (and the watch's first lookup)
        assert len(network.connects) == len(CONTROLS)


async def test_the_watch_calls_back_when_the_network_comes_back() -> None:
    network = Network(routed=False)
    async with watching(network) as w:
        back = asyncio.Event()
        w.on_back = lambda state: back.set()
        await w.assess([NXDOMAIN])
        assert w.state.offline
        await asyncio.sleep(0.05)
        assert not back.is_set()  # still no route
        network.routed, network.answering = True, {"198.51.100.1"}
        async with asyncio.timeout(60):  # a bound for a loaded machine, not a pause
            await back.wait()  # the route appeared: the controls were asked at once
        assert w.state.state == ONLINE


async def test_a_service_answering_also_brings_the_network_back() -> None:
    network = Network(routed=False)
    async with watching(network) as w:
        back: list[str] = []
        w.on_back = lambda state: back.append(state.reason)
        await w.assess([NXDOMAIN])
        assert w.state.offline
        assert (await w.assess([SNI_RESET])).state == ONLINE
        assert back == ["a service answered"]  # every service is probed again, once
        assert (await w.assess([SNI_RESET])).state == ONLINE
        assert back == ["a service answered"]


async def test_a_reload_changes_the_controls_and_keeps_the_state() -> None:
    network = Network(routed=True)
    async with watching(network) as w:
        await w.assess([BLACK_HOLED])
        assert w.state.offline
        w.configure((Endpoint("198.51.100.9", 53),), timeout=1.0)
        assert w.state.offline and w.timeout == 1.0
        network.answering = {"198.51.100.9"}
        assert (await w.assess([BLACK_HOLED])).state == ONLINE
        assert network.connects[-1] == "198.51.100.9"


async def test_without_controls_a_route_that_appears_is_enough() -> None:
    network = Network(routed=False)
    async with watching(network, controls=()) as w:
        back = asyncio.Event()
        w.on_back = lambda state: back.set()
        await w.assess([NXDOMAIN])
        assert w.state.offline
        network.routed = True
        async with asyncio.timeout(60):  # a bound for a loaded machine, not a pause
            await back.wait()
        assert w.state.state == UNKNOWN and network.connects == []


# --- the config key -----------------------------------------------------------------------


def test_control_targets_default_to_public_addresses() -> None:
    config = parse_config(config_text())
    assert [str(t) for t in config.probe.control_targets] == [
        "77.88.8.8:443",
        "1.1.1.1:443",
        "9.9.9.9:443",
        "8.8.8.8:443",
    ]


def test_control_targets_are_addresses_and_can_be_none() -> None:
    config = parse_config(config_text(extra='[probe]\ncontrol_targets = ["[2001:db8::1]:53"]\n'))
    assert config.probe.control_targets == (Endpoint("2001:db8::1", 53),)
    assert (
        parse_config(config_text(extra="[probe]\ncontrol_targets = []\n")).probe.control_targets
        == ()
    )
    for bad, words in (
        ('["example.com:443"]', "an IP address, not a name"),
        ('["1.1.1.1"]', "probe.control_targets[0]"),
        ('"1.1.1.1:443"', "probe.control_targets"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(config_text(extra=f"[probe]\ncontrol_targets = {bad}\n"))
        assert words in str(caught.value)


# --- what the status views show -----------------------------------------------------------


@pytest.fixture
async def offline_engine():
    engine = Engine(parse_config(config_text(extra=SERVICE)), probe_on_start=False)
    engine.network.state = DOWN
    engine.monitor.results[("telegram", "direct")] = offline_result(NXDOMAIN, DOWN)
    yield engine
    await engine.stop()


SERVICE = """
[[service]]
name = "telegram"
domains = ["telegram.org"]
probes = ["tls://web.telegram.org:443"]
"""


async def test_the_status_document_and_healthz_say_offline(offline_engine) -> None:
    snapshot = offline_engine.snapshot()
    snapshot = dataclasses.replace(snapshot, listeners=(*snapshot.listeners, *_mixed(snapshot)))
    document = status_document(snapshot)
    assert document["network"] == {"state": "offline", "reason": DOWN.reason, "checked_at": 1.0}
    (route,) = document["services"][0]["routes"]
    assert route["diagnosis"].startswith("offline:") and route["failure"] == "dns_nxdomain_error"
    assert health(snapshot) == (False, f"offline: {DOWN.reason}")


async def test_the_metrics_name_the_network_state(offline_engine) -> None:
    text = Metrics().render(offline_engine.snapshot())
    assert 'detour_network_state{state="offline"} 1' in text
    assert 'detour_network_state{state="online"} 0' in text


async def test_the_ui_model_shows_offline_not_a_diagnosis(offline_engine) -> None:
    snapshot = offline_engine.snapshot()
    service, route = snapshot.service("telegram"), snapshot.route("direct")
    assert model.cell(snapshot, service, route).label() == " ○ offline"
    assert model.service_header(snapshot, service).text == "○ offline"
    assert model.describe_network(snapshot.network).startswith("○ offline: nothing answers")
    assert model.describe_network(NetworkView(ONLINE, "a service answered", 1.0)) == ""


def _mixed(snapshot):
    from helper.status import ListenerView

    return () if snapshot.listening("mixed") else (ListenerView("mixed", "127.0.0.1", 1080),)


# --- the monitor: verdicts as they arrive, "offline" once a pass found nothing ------------

ROUTES = ("a", "b", "c")


class ScriptedProber:
    """Each route's probe returns its scripted result once its gate opens (no gate: at once)."""

    def __init__(self, outcomes: dict[str, ProbeResult]) -> None:
        self.outcomes = outcomes
        self.gates = {name: asyncio.Event() for name in outcomes}
        for gate in self.gates.values():
            gate.set()
        self.done: dict[str, asyncio.Event] = {name: asyncio.Event() for name in outcomes}

    async def probe(self, service, route, *, passed=None) -> ProbeResult:
        await self.gates[route.name].wait()
        self.done[route.name].set()
        return dataclasses.replace(self.outcomes[route.name], route=route.name)


@pytest.fixture
async def monitored():
    routes = {name: "direct" for name in ROUTES}
    text = config_text(routes=routes, extra=SERVICE + '[probe]\nstagger = "1ms"\n')
    engine = Engine(parse_config(text), probe_on_start=False)
    probed: list[list[ProbeResult]] = []
    engine.monitor.on_probed = lambda _service, results: probed.append(results)
    engine.probed = probed
    yield engine
    await engine.stop()


def _use(engine, network: Network, outcomes: dict[str, ProbeResult]) -> ScriptedProber:
    prober = ScriptedProber(outcomes)
    engine.monitor.prober = prober
    engine.monitor.watch = engine.network = watch(network)
    return prober


def _health(engine, route: str):
    return engine.router.health.get("telegram", route)


async def test_a_pass_where_nothing_answered_says_offline_and_leaves_health(monitored) -> None:
    _use(monitored, Network(routed=True), dict.fromkeys(ROUTES, NXDOMAIN))
    service = next(s for s in monitored.router.services if s.name == "telegram")
    await monitored.monitor._probe(service)
    for name in ROUTES:
        assert monitored.monitor.results[("telegram", name)].diagnosis.startswith("offline:")
        assert _health(monitored, name).ok is None  # nothing learnt about the route
    assert monitored.probed == []  # no search from an offline pass


async def test_verdicts_flow_as_they_arrive_once_a_route_answered(monitored) -> None:
    prober = _use(monitored, Network(routed=True), {"a": NXDOMAIN, "b": SNI_RESET, "c": NXDOMAIN})
    prober.gates["c"].clear()
    service = next(s for s in monitored.router.services if s.name == "telegram")
    task = asyncio.ensure_future(monitored.monitor._probe(service))
    await prober.done["b"].wait()
    for _ in range(5):
        await asyncio.sleep(0)
    # b got an answer (a reset after connecting): a's held verdict and b's are recorded now,
    # while c still runs, and they blame the censor as measured.
    for name in ("a", "b"):
        assert _health(monitored, name).ok is False
        assert not monitored.monitor.results[("telegram", name)].diagnosis.startswith("offline")
    assert ("telegram", "c") not in monitored.monitor.results
    prober.gates["c"].set()
    await task
    assert _health(monitored, "c").ok is False
    assert len(monitored.probed) == 1


async def test_an_unanswered_verdict_waits_for_the_pass(monitored) -> None:
    prober = _use(monitored, Network(routed=True, answering={"198.51.100.1"}), {})
    prober.outcomes.update({"a": NXDOMAIN, "b": NXDOMAIN, "c": NXDOMAIN})
    prober.gates.update({n: asyncio.Event() for n in ROUTES})
    prober.done.update({n: asyncio.Event() for n in ROUTES})
    prober.gates["a"].set()
    service = next(s for s in monitored.router.services if s.name == "telegram")
    task = asyncio.ensure_future(monitored.monitor._probe(service))
    await prober.done["a"].wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert _health(monitored, "a").ok is None  # held: the network may be down
    for name in ("b", "c"):
        prober.gates[name].set()
    await task
    # A control target answered: the network works, so these are the censor's doing.
    for name in ROUTES:
        assert _health(monitored, name).ok is False
        assert monitored.monitor.results[("telegram", name)].diagnosis.endswith("DNS blocking")
    assert len(monitored.probed) == 1


async def test_no_route_out_says_offline_before_the_pass_ends(monitored) -> None:
    prober = _use(monitored, Network(routed=False), dict.fromkeys(ROUTES, BLACK_HOLED))
    prober.gates["c"].clear()
    service = next(s for s in monitored.router.services if s.name == "telegram")
    task = asyncio.ensure_future(monitored.monitor._probe(service))
    await prober.done["b"].wait()
    for _ in range(20):
        await asyncio.sleep(0)
        if ("telegram", "b") in monitored.monitor.results:
            break
    assert monitored.monitor.results[("telegram", "a")].diagnosis.startswith("offline: no route")
    assert _health(monitored, "a").ok is None
    prober.gates["c"].set()
    await task
    assert all(_health(monitored, n).ok is None for n in ROUTES)
    assert monitored.probed == []


def test_the_environment_replaces_only_the_built_in_control_targets(monkeypatch) -> None:
    monkeypatch.setenv("DETOUR_CONTROL_TARGETS", "127.0.0.1:9, [::1]:9")
    built_in = parse_config(config_text()).probe.control_targets
    assert controls_for(built_in) == (Endpoint("127.0.0.1", 9), Endpoint("::1", 9))
    assert controls_for(CONTROLS) == CONTROLS  # a config's own targets stay
    monkeypatch.setenv("DETOUR_CONTROL_TARGETS", "")
    assert controls_for(built_in) == ()
    monkeypatch.setenv("DETOUR_CONTROL_TARGETS", "example.com:443")
    assert controls_for(built_in) == built_in  # a bad value is ignored (and logged)
    monkeypatch.delenv("DETOUR_CONTROL_TARGETS")
    assert controls_for(built_in) == built_in
