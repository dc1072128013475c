"""Calls where the network drops UDP to the services: the lab's UDP mocks (a STUN server and
a UDP echo "call relay") behind a censor's UDP hop that drops every datagram except those
from "abroad" (127.0.0.2, where an upstream SOCKS5 proxy sends from, as the lab's upstreams
do). The UDP probes tell the routes apart (udp_dropped, ok, udp_not_carried), their verdicts
go into the router's UDP health, and a client's association then takes the route that works.
"""

from __future__ import annotations

import asyncio

import pytest

from helper.lab.udpmocks import StunServer, UdpCensor, UdpEcho, start_censor, start_udp
from helper.probe.udp import probe_udp_routes
from tests.conftest import config_text
from tests.support.listeners import proxy_leaving_from
from tests.support.udp import associate
from transports import Endpoint

ABROAD = "127.0.0.2"


@pytest.fixture
async def censored():
    """(stun censor, echo censor): each drops UDP unless it comes from ABROAD."""
    stun, echo = await start_udp(StunServer()), await start_udp(UdpEcho())
    censors = [
        await start_censor(UdpCensor(s.address, drop=True, allowed_sources=frozenset({ABROAD})))
        for s in (stun, echo)
    ]
    yield censors
    for item in (*censors, stun, echo):
        item.close()


@pytest.fixture
async def abroad():
    """An upstream SOCKS5 proxy whose datagrams leave from ABROAD: detour's own listener, as
    the lab's upstream is."""
    async with proxy_leaving_from(ABROAD) as port:
        yield port


def _config(stun: Endpoint, echo: Endpoint, abroad_port: int) -> str:
    extra = f"""
    [[service]]
    name = "calls"
    cidrs = ["127.0.0.1/32"]
    udp_probes = ["stun://{stun}", "udp-echo://{echo}"]
    """
    routes = {
        "direct": "direct",
        "abroad": f"socks5://127.0.0.1:{abroad_port}",
        "web": "http://127.0.0.1:3128",
    }
    return config_text(routes=routes, extra=extra)


async def test_probes_tell_dropped_udp_apart(start_engine, censored, abroad) -> None:
    stun, echo = censored
    engine = await start_engine(_config(stun.address, echo.address, abroad))
    service = engine.router.services.match(Endpoint("127.0.0.1", 1))
    routes = [engine.router.route(n) for n in ("direct", "abroad", "web")]
    results = {
        r.route: r
        for r in await probe_udp_routes(service, routes, engine.router.udp_health, timeout=1.5)
    }
    assert results["direct"].diagnosis == "udp_dropped" and not results["direct"].ok
    assert results["abroad"].ok and results["abroad"].rtt_ms is not None
    assert [t["ok"] for t in results["abroad"].targets] == [True, True]
    assert results["web"].diagnosis == "udp_not_carried"
    assert "route 'web'" in results["web"].detail
    json = results["abroad"].to_json()
    assert set(json) == {"route", "ok", "diagnosis", "detail", "rtt_ms", "targets"}
    assert stun.dropped >= 1  # the direct route's datagrams met the censor

    # The association now takes the route whose UDP works, not the first in order.
    client = await associate(engine.mixed_address)
    try:
        assert await client.echo(b"call media", echo.address) == b"call media"
    finally:
        await client.close()


async def test_without_udp_health_direct_is_tried_and_dropped(
    start_engine, censored, abroad
) -> None:
    """Before any probe, direct comes first and its datagrams are dropped on the way:
    what a user meets on such a network, and why UDP health is probed."""
    _stun, echo = censored
    engine = await start_engine(
        _config(_stun.address, echo.address, abroad), probe_on_start=False
    )  # (no UDP probe at start either)
    client = await associate(engine.mixed_address)
    try:
        client.send(b"lost", echo.address)
        async with asyncio.timeout(5):
            while echo.dropped < 1:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.01)
        assert echo.passed == 0
    finally:
        await client.close()


async def test_probe_json_has_udp_per_route(censored, abroad, capsys) -> None:
    """`detour probe --json`: a service with `udp_probes` gets a `udp` list beside its
    routes (new keys only)."""
    from helper.config import parse_config
    from helper.probe.run import probe_services

    stun, echo = censored
    text = _config(stun.address, echo.address, abroad).replace(
        'cidrs = ["127.0.0.1/32"]',
        f'cidrs = ["127.0.0.1/32"]\nprobes = ["tcp://127.0.0.1:{abroad}"]',
    )
    code = await probe_services(parse_config(text, "test"), ["calls"], as_json=True)
    import json

    document = json.loads(capsys.readouterr().out)
    (service,) = document["services"]
    assert {"name", "reachable", "best_route", "routes", "udp"} <= set(service)
    udp = {row["route"]: row["diagnosis"] for row in service["udp"]}
    assert udp == {"direct": "udp_dropped", "abroad": "ok", "web": "udp_not_carried"}
    assert code in (0, 1)
