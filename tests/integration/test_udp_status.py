"""UDP in the status API and the metrics: the monitor probes the services' UDP on its
interval (UDP health apart from TCP's), /status shows it per service and the UDP listeners'
associations, datagrams, bytes and drops by reason; /metrics has the same counters; the
UDP fields against docs/status-api.md's table, both ways."""

from __future__ import annotations

import asyncio

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from tests.conftest import config_text
from tests.integration.test_status_api import documented_fields, get, parse_json, samples, walk
from tests.support.peers import free_port
from tests.support.udp import associate
from transports import Endpoint


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):  # a safety net, not a measurement
        while not predicate():  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.01)


def _config(echo: Endpoint, dead: int) -> str:
    return config_text(
        routes={"direct": "direct", "web": "http://127.0.0.1:3128"},
        extra=f"""
        [api]
        listen = "127.0.0.1:0"

        [[service]]
        name = "calls"
        cidrs = ["127.0.0.1/32"]
        udp_probes = ["udp-echo://{echo}"]

        [[service]]
        name = "half"
        cidrs = ["127.0.0.2/32"]
        udp_probes = ["udp-echo://{echo}", "udp-echo://127.0.0.1:{dead}"]
        """,
    )


def _check_udp_schema(document: dict) -> None:
    """Every UDP path served is documented, and every documented one served."""
    udp = ("udp", "services[].udp")
    fields = {f: t for f, t in documented_fields().items() if f.startswith(udp)}
    seen = set()
    for path, kind in walk(document):
        if path.startswith(udp):
            assert path in fields, f"/status has {path}, which docs/status-api.md does not list"
            assert kind in fields[path], f"{path} is {kind}; documented: {fields[path]}"
            seen.add(path)
    assert not set(fields) - seen, f"documented, not served: {set(fields) - seen}"


async def test_udp_health_and_counters_in_status_and_metrics(start_engine, echo) -> None:
    engine = await start_engine(_config(echo.address, free_port()), probe_on_start=False)
    monitor = engine.udp_monitor
    monitor.interval = 0.2  # (the monitor's [probe] interval; short here)
    monitor.timeout = 1.0
    monitor.request()
    await asyncio.wait_for(monitor.wait_round(1), 30)  # two rounds: periodic, not once

    client = await associate(engine.mixed_address)
    try:
        assert await client.echo(b"x" * 100, echo.address) == b"x" * 100
        client.send_raw(b"\x00\x00")  # malformed
        client.send(b"frag", echo.address, frag=2)  # a fragment
        listener = next(lst for lst in engine.server.listeners if lst.kind == "mixed")
        await _wait_for(lambda: listener.udp.totals().dropped == 2)

        document = parse_json((await get(engine, "/status"))[2])
        _check_udp_schema(document)
        (mixed,) = document["udp"]
        assert mixed["listener"] == "mixed"
        assert (mixed["associations_open"], mixed["associations_total"]) == (1, 1)
        assert (mixed["datagrams_up"], mixed["datagrams_down"]) == (1, 1)
        assert (mixed["bytes_up"], mixed["bytes_down"]) == (100, 100)
        assert mixed["dropped"] == {
            "malformed": 1,
            "fragment": 1,
            "foreign": 0,
            "refused": 0,
            "over_limit": 0,
            "no_route": 0,
        }
        services = {s["name"]: s for s in document["services"]}
        calls = {row["route"]: row for row in services["calls"]["udp"]}
        assert calls["direct"]["ok"] and calls["direct"]["diagnosis"] == "ok"
        assert calls["web"]["diagnosis"] == "udp_not_carried"
        half = {row["route"]: row for row in services["half"]["udp"]}
        assert not half["direct"]["ok"]
        assert [t["ok"] for t in half["direct"]["targets"]] == [True, False]
        # Per route: carried at all, and the latest verdict of each service through it.
        routes = {row["route"]: row for row in document["udp_routes"]}
        assert routes["direct"]["carries_udp"] and routes["direct"]["why_not"] is None
        assert routes["direct"]["ok"] is False  # "half" is not ok through it
        per_service = {row["service"]: row for row in routes["direct"]["services"]}
        assert per_service["calls"]["ok"] and per_service["calls"]["diagnosis"] == "ok"
        assert per_service["half"]["diagnosis"] == "udp_dropped"
        assert not routes["web"]["carries_udp"]
        assert "HTTP CONNECT" in routes["web"]["why_not"]
        assert routes["web"]["services"][0]["diagnosis"] == "udp_not_carried"
        probes = document["udp_probes"]
        assert probes["services"] == 2 and probes["rounds"] >= 2
        assert probes["last_round_at"] is not None and probes["skipped_offline"] == 0

        metrics = samples((await get(engine, "/metrics"))[2])
        mixed_label = frozenset({("listener", "mixed")})
        assert metrics[("detour_udp_associations_open", mixed_label)] == 1
        assert metrics[("detour_udp_associations_total", mixed_label)] == 1
        up = frozenset({("listener", "mixed"), ("direction", "up")})
        assert metrics[("detour_udp_datagrams_total", up)] == 1
        assert metrics[("detour_udp_bytes_total", up)] == 100
        for reason, count in mixed["dropped"].items():
            labels = frozenset({("listener", "mixed"), ("reason", reason)})
            assert metrics[("detour_udp_dropped_total", labels)] == count
        healthy = frozenset({("service", "calls"), ("route", "direct")})
        assert metrics[("detour_udp_route_healthy", healthy)] == 1
        not_carried = frozenset({("service", "calls"), ("route", "web")})
        assert metrics[("detour_udp_route_healthy", not_carried)] == 0
    finally:
        await client.close()
