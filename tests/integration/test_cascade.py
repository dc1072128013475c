"""The built-in cascade (config/default.toml, docs/routing.md "The built-in cascade"): routes
that need no server, in a sensible order; packet tricks only where they can run; Tor's ports
only while something listens there (checked at start and on reload); and the route that
worked on a network first after a restart on it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from helper.config import load_config
from helper.config import routes as route_config
from helper.engine import Engine
from helper.routing.health import HealthBook, RouteHealth
from helper.routing.present import first_hop, present_routes
from helper.routing.state import HealthStore
from tests.support.peers import free_port
from transports import Endpoint, parse_chain

BUILT_IN = load_config()
NAMES = [r.name for r in BUILT_IN.routes]
PROXY_LAYERS = {"socks5", "socks4a", "http", "pt", "ss", "front", "relay"}


def test_every_built_in_route_needs_no_server_of_ones_own() -> None:
    assert NAMES[0] == "direct"
    for route in BUILT_IN.routes:
        hops = [layer.name for layer in route.chain.layers if layer.name in PROXY_LAYERS]
        if hops:  # only a local Tor, and only while it listens
            assert route.when == "listening", route.name
            hop = first_hop(route)
            assert hop is not None and hop.ip is not None and hop.ip.is_loopback
    tor = [first_hop(r) for r in BUILT_IN.routes if r.when == "listening"]
    assert tor == [Endpoint("127.0.0.1", 9050), Endpoint("127.0.0.1", 9150)]


def test_encrypted_dns_comes_from_independent_providers_by_address() -> None:
    servers = set()
    for route in BUILT_IN.routes:
        base = route.chain.layers[0]
        if base.name != "resolve":
            continue
        spec = base.params["resolver"]
        assert spec.kind in ("doh", "dot")
        # Nothing to resolve before resolving: an address, or a name with its addresses.
        assert spec.server.ip is not None or spec.bootstrap, route.name
        servers.add(str(spec.bootstrap[0] if spec.bootstrap else spec.server.ip))
    assert {"1.1.1.1", "8.8.8.8", "9.9.9.9"} <= servers
    kinds = {
        r.chain.layers[0].params["resolver"].kind
        for r in BUILT_IN.routes
        if r.chain.layers[0].name == "resolve"
    }
    assert kinds == {"doh", "dot"}


def test_the_cheap_routes_come_first_and_packet_tricks_are_linux_only() -> None:
    assert NAMES.index("tls-fragment") < NAMES.index("doh") < NAMES.index("split")
    # The trick that passes reassembling DPIs early: background probes get two TLS
    # handshakes per server name a second, and a route's place decides when its probe
    # starts (docs/performance.md "Time to a working route on a new network").
    assert NAMES.index("doh-fragment") < NAMES.index("tgws") < NAMES.index("oob")
    assert NAMES.index("tgws-fragment") < NAMES.index("oob") < NAMES.index("fake")
    assert NAMES.index("fake") < NAMES.index("disorder") < NAMES.index("split")
    packets = {"fake", "disorder", "oob"}
    for route in BUILT_IN.routes:
        if any(layer.name in packets for layer in route.chain.layers):
            assert route.when == "linux", route.name


def test_elsewhere_the_linux_routes_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(route_config.sys, "platform", "darwin")
    data = {"route": [{"name": "oob", "chain": "oob:sni", "when": "linux"}, {"name": "d"}]}
    kept = route_config._for_this_system(data)
    assert [t["name"] for t in kept["route"]] == ["d"]


async def test_a_tor_port_is_a_route_only_while_it_listens() -> None:
    port = free_port()
    tor = dataclasses.replace(
        BUILT_IN.route("local-tor"), chain=parse_chain(f"socks5://127.0.0.1:{port}")
    )
    signal = dataclasses.replace(BUILT_IN.services[2], routes=("local-tor", "direct"))
    config = dataclasses.replace(BUILT_IN, routes=(BUILT_IN.routes[0], tor), services=(signal,))
    absent = present_routes(config)
    assert [r.name for r in absent.routes] == ["direct"]
    assert absent.services[0].routes == ("direct",)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        present = await asyncio.to_thread(present_routes, config)
        assert [r.name for r in present.routes] == ["direct", "local-tor"]
        assert present.services[0].routes == ("local-tor", "direct")
    finally:
        server.close()
        await server.wait_closed()


async def test_the_route_that_worked_here_comes_first_after_a_restart(tmp_path: Path) -> None:
    """Memory with the built-in cascade: a route far down the list that worked on this
    network leads the next run's candidates before any probe."""
    store = HealthStore(tmp_path)
    book = HealthBook()
    late = NAMES[-3] if BUILT_IN.route(NAMES[-1]).when == "listening" else NAMES[-1]
    book.set("signal", late, RouteHealth(ok=True, latency_ms=50, checked_at=time.time()))
    store.save("home", book)
    config = dataclasses.replace(
        BUILT_IN, listen=dataclasses.replace(BUILT_IN.listen, mixed=Endpoint("127.0.0.1", 0))
    )
    engine = Engine(config, store=store, network="home", probe_on_start=False)
    await engine.start()
    try:
        service, routes = engine.router.plan(Endpoint("chat.signal.org", 443))
        assert service is not None and service.name == "signal"
        assert routes[0].name == late
        assert engine.router.health.get("signal", late).source == "memory"
    finally:
        await engine.stop()


@pytest.mark.parametrize("service", [s.name for s in BUILT_IN.services])
@pytest.mark.parametrize(("route", "bound"), [("oob", 2.0), ("fake", 2.4)])
def test_a_packet_tricks_probe_handshake_is_booked_early(
    service: str, route: str, bound: float
) -> None:
    """On a network where only a packet trick works, its probe's TLS handshake waits for the
    routes before it in the per-name handshake budget (two background starts a second): the
    order keeps `oob` the fifth route with a web target and `fake` the sixth (the budget's
    bookings, without I/O; the `tgws` routes carry no web target)."""
    from helper.search.budget import HandshakeBudget

    settings = BUILT_IN.probe
    budget = HandshakeBudget(
        settings.handshakes, settings.handshake_window, settings.handshake_gap, clock=lambda: 0
    )
    probes = next(s for s in BUILT_IN.services if s.name == service).probes
    web = [t for t in probes if t.kind in ("tls", "https")]
    assert web
    booked = {}
    for name in NAMES:
        if str(BUILT_IN.route(name).chain).split(" | ")[-1] == "tgws":
            continue  # skipped for web targets: no handshake
        booked[name] = budget.book(web[0].endpoint.host, 0.0).at
    assert booked[route] <= bound
