"""The lab's UDP scenarios (helper/lab/udpmocks.py's UDP_SCENARIOS), each against detour's
UDP probes and a client's association: which routes' UDP works, the service-wide verdict
(`udp_dropped_everywhere` where the network drops all unknown UDP), and that DNS to the
network's resolver still passes while STUN is dropped."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rdatatype
import pytest

from helper.lab.udpmocks import ABROAD, UDP_SCENARIOS, UdpLab
from helper.probe.udp import probe_udp_routes, udp_verdict
from tests.conftest import config_text
from tests.support.listeners import proxy_leaving_from
from tests.support.udp import associate
from transports import Endpoint
from transports.stun import BINDING_SUCCESS, binding_request, parse_message

# scenario -> (each route's UDP diagnosis, the service's verdict)
EXPECTED = {
    "udp-services-dropped": (
        {"direct": "udp_dropped", "abroad": "ok", "web": "udp_not_carried"},
        "udp_works",
    ),
    "udp-all-dropped": (
        {"direct": "udp_dropped", "abroad": "udp_dropped", "web": "udp_not_carried"},
        "udp_dropped_everywhere",
    ),
}


def test_every_scenario_has_its_expectations() -> None:
    assert set(EXPECTED) <= set(UDP_SCENARIOS)


@pytest.fixture
async def abroad():
    """An upstream SOCKS5 proxy whose datagrams leave from ABROAD (detour's own listener)."""
    async with proxy_leaving_from(ABROAD) as port:
        yield port


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_udp_scenario(name: str, start_engine, abroad) -> None:
    routes_expected, verdict_expected = EXPECTED[name]
    async with UdpLab(name, {"lab.test": ["127.77.0.1"]}) as lab:
        stun, relay, resolver = (lab.address(n) for n in ("stun", "relay", "resolver"))
        text = config_text(
            routes={
                "direct": "direct",
                "abroad": f"socks5://127.0.0.1:{abroad}",
                "web": "http://127.0.0.1:3128",
            },
            extra=f"""
            [[service]]
            name = "calls"
            cidrs = ["127.0.0.1/32"]
            udp_probes = ["stun://{stun}", "udp-echo://{relay}"]
            """,
        )
        engine = await start_engine(text, probe_on_start=False)
        service = engine.router.services.match(Endpoint("127.0.0.1", 1))
        routes = [engine.router.route(n) for n in ("direct", "abroad", "web")]
        results = await probe_udp_routes(service, routes, engine.router.udp_health, timeout=1.5)
        assert {r.route: r.diagnosis for r in results} == routes_expected
        verdict, detail = udp_verdict(results)
        assert verdict == verdict_expected, detail
        if verdict == "udp_dropped_everywhere":
            assert "direct, abroad" in detail and "inside TCP" in detail
        assert lab.censors["stun"].dropped >= 1

        # A client: DNS to the resolver passes; its STUN takes the route whose UDP works,
        # and where none does, it is dropped.
        client = await associate(engine.mixed_address)
        try:
            query = dns.message.make_query("lab.test", dns.rdatatype.A)
            client.send(query.to_wire(), resolver)
            answer, source = await client.receive()
            assert source == resolver
            (rrset,) = dns.message.from_wire(answer).answer
            assert [r.address for r in rrset] == ["127.77.0.1"]
            dropped = lab.censors["stun"].dropped
            client.send(binding_request()[0], stun)
            if verdict == "udp_works":
                answer, source = await client.receive()
                assert parse_message(answer).type == BINDING_SUCCESS and source == stun
            else:
                await _wait_for(lambda: lab.censors["stun"].dropped > dropped)
        finally:
            await client.close()


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):  # a safety net, not a measurement
        while not predicate():  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.01)
