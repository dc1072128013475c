"""The UDP monitor without sockets: no round while the network watch says the network is
down, a round at once when the watch says it is back (as the TCP monitor gets), and what
the status shows of it (each route's UDP, the rounds). The routes here carry no UDP, so a
probe is a verdict without a datagram; the watch's network is scripted (test_network.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from helper.routing.route import Route
from helper.routing.udp_health import UdpHealth
from helper.routing.udp_monitor import UdpMonitor
from helper.services import Service, UdpProbeTarget
from tests.unit.test_network import NXDOMAIN, SNI_RESET, Network, watch
from transports import DialOptions, parse_chain

CALLS = Service("calls", udp_probes=(UdpProbeTarget.parse("udp-echo://192.0.2.7:1400"),))


def _route(name: str, chain: str) -> Route:
    parsed = parse_chain(chain)
    return Route(name, parsed, parsed.build(DialOptions()))


def _router(*routes: Route) -> SimpleNamespace:
    return SimpleNamespace(
        services=[CALLS],
        routes=list(routes),
        enabled_routes=lambda service: list(routes),
        udp_health=UdpHealth(),
    )


async def test_no_round_while_offline_and_one_as_soon_as_the_network_is_back() -> None:
    network = Network(routed=False)
    w = watch(network)
    tcp_told: list[str] = []
    w.on_back = lambda state: tcp_told.append(state.reason)  # the TCP monitor's slot
    router = _router(_route("web", "http://127.0.0.1:3128"))
    monitor = UdpMonitor(lambda: router, interval=3600, network=w)
    try:
        await w.assess([NXDOMAIN])  # no route out: offline
        assert w.state.offline
        monitor.start(probe_now=True)
        await asyncio.wait_for(monitor.wait_round(0), 5)
        assert monitor.skipped_offline == 1 and monitor.last_round_at is None
        assert router.udp_health.get("calls", "web") is None  # no verdict from offline

        await w.assess([SNI_RESET])  # a service answered: back
        await asyncio.wait_for(monitor.wait_round(1), 5)  # long before the interval
        assert tcp_told == ["a service answered"]  # the TCP monitor is told as before
        assert monitor.network_back == 1 and monitor.skipped_offline == 1
        assert router.udp_health.get("calls", "web") is False
        assert monitor.last_round_at is not None
    finally:
        await monitor.stop()
        await w.aclose()
    assert w.back_listeners == []  # stopped: no longer told


async def test_a_network_back_without_udp_probes_asks_for_nothing() -> None:
    w = watch(Network(routed=False))
    router = _router(_route("direct", "direct"))
    router.services = [Service("chats")]
    monitor = UdpMonitor(lambda: router, interval=3600, network=w)
    monitor.start(probe_now=False)
    try:
        await w.assess([NXDOMAIN])
        await w.assess([SNI_RESET])
        assert monitor.network_back == 0
    finally:
        await monitor.stop()
        await w.aclose()


async def test_status_views_of_routes_and_rounds() -> None:
    router = _router(_route("direct", "direct"), _route("web", "http://127.0.0.1:3128"))
    monitor = UdpMonitor(lambda: router, interval=60)
    router.udp_health.record(
        "calls", "direct", True, {"route": "direct", "ok": True, "diagnosis": "ok", "rtt_ms": 4.5}
    )
    router.udp_health.record(
        "calls", "web", False, {"route": "web", "ok": False, "diagnosis": "udp_not_carried"}
    )
    direct, web = (view.to_json() for view in monitor.route_views())
    assert direct["route"] == "direct" and direct["carries_udp"] and direct["why_not"] is None
    assert direct["ok"] is True
    assert [(s["service"], s["ok"], s["rtt_ms"]) for s in direct["services"]] == [
        ("calls", True, 4.5)
    ]
    assert not web["carries_udp"] and "HTTP CONNECT proxy" in web["why_not"]
    assert web["ok"] is False and web["services"][0]["diagnosis"] == "udp_not_carried"
    view = monitor.view().to_json()
    assert view == {
        "services": 1,
        "rounds": 0,
        "running": False,
        "last_round_at": None,
        "skipped_offline": 0,
        "network_back": 0,
        "interval_s": 60,
    }


def test_a_route_never_probed_has_no_verdict() -> None:
    router = _router(_route("direct", "direct"))
    [view] = UdpMonitor(lambda: router, interval=60).route_views()
    assert view.ok is None and view.to_json()["services"] == []


def test_the_tuis_details_show_the_routes_udp_verdict() -> None:
    from helper.status import UdpHealthView
    from helper.tui.details import udp_text

    works = UdpHealthView(True, "ok", {"rtt_ms": 4.5, "detail": ""}, 0.0)
    dropped = UdpHealthView(
        False, "udp_dropped", {"detail": "udp-echo://192.0.2.7:1400: no answer"}, 0.0
    )
    assert "works" in udp_text(works).plain and "4.5 ms" in udp_text(works).plain
    assert "udp_dropped: udp-echo://192.0.2.7:1400: no answer" in udp_text(dropped).plain
    assert "not probed yet" in udp_text(None).plain
