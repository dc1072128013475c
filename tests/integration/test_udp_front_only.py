"""The lab scenario "only TCP to a front passes" (helper/lab/frontonly.py): all UDP dropped,
all TCP dropped but to the front. The UDP probes find `udp_dropped` through `direct` and
`ok` through the fronted route; a SOCKS5 client's STUN binding request and UDP echo then go
through the tunnel (the UDP censors pass them: they come from the relay, abroad)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from helper.config import ListenConfig, parse_config
from helper.lab.frontonly import FrontOnly
from helper.probe.udp import probe_udp_routes
from helper.proxy import ClientServer, MixedListener
from helper.proxy.mixed import listen_admission
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from helper.routing import Route, Router
from helper.services import ServiceTable
from tests.conftest import config_text
from tests.support.peers import free_port
from tests.support.relays import relay_config
from tests.support.udp import associate
from tests.support.waiting import until
from transports import DialOptions, Endpoint, parse_chain
from transports.direct import DirectDialer
from transports.guard import AddressPolicy
from transports.stun import binding_request, parse_message

ABROAD = "127.0.0.2"  # where the relay's datagrams leave from: outside the censored network


@pytest.fixture
async def lab(tmp_path, test_ca, echo_origin):
    config = relay_config(
        tmp_path, test_ca, '[destinations]\nallow = "any"\npublic = ["127.0.0.0/8"]\n'
    )
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys, local_address=ABROAD)
    _, port = await server.start()
    scenario = await FrontOnly.start(
        Endpoint("127.0.0.1", port),
        ABROAD,
        front_port=free_port(),
        tcp_service=(Endpoint("127.0.0.1", echo_origin.port), free_port()),
    )
    key = keys.add_client("alice", scenario.front, "relay.test", "relay.test")
    chain = parse_chain("front:" + key.encode())
    front = chain.build(DialOptions(tls=test_ca.client_context(), handshake_timeout=3))
    routes = [
        Route("direct", parse_chain("direct"), DirectDialer()),
        Route("front", chain, front),
    ]
    try:
        yield scenario, routes, server
    finally:
        await front.aclose()
        await scenario.stop()
        await server.stop(grace=0.5)


async def test_calls_go_through_the_tunnel_when_only_the_front_passes(lab) -> None:
    scenario, routes, relay = lab
    extra = f"""
    [[service]]
    name = "calls"
    cidrs = ["127.0.0.1/32"]
    udp_probes = ["stun://{scenario.stun}", "udp-echo://{scenario.echo}"]
    """
    (service,) = [s for s in parse_config(config_text(extra=extra)).services if s.name == "calls"]
    router = Router(routes, ServiceTable([service]), "direct")
    results = {r.route: r for r in await probe_udp_routes(service, routes, router.udp_health, 1.5)}
    assert results["direct"].diagnosis == "udp_dropped", results["direct"]
    assert results["front"].ok, results["front"]
    assert scenario.udp_dropped >= 1

    # TCP to the service itself goes nowhere (held, never answered); only the front passes.
    assert scenario.tcp_service is not None
    reader, writer = await asyncio.open_connection(
        scenario.tcp_service.host, scenario.tcp_service.port
    )
    writer.write(b"x")
    assert scenario.tcp_censor is not None
    events = scenario.tcp_censor.events
    await until(lambda: any(e.verdict.action == "drop" for e in events))
    assert not reader.at_eof()  # held, not closed: a drop
    writer.close()

    # A client's association takes the route whose UDP works: the tunnel.
    listen = ListenConfig(mixed=Endpoint("127.0.0.1", 0))
    server = ClientServer(router)
    listener = server.add(MixedListener(listen, listen_admission(listen), AddressPolicy()))
    await server.start()
    client = await associate(("127.0.0.1", listener.sockets[0][1]))
    try:
        request, transaction = binding_request()
        client.send(request, scenario.stun)
        payload, source = await client.receive()
        answer = parse_message(payload)
        assert source == scenario.stun and answer.transaction == transaction
        assert answer.mapped is not None
        assert await client.echo(b"call media", scenario.echo) == b"call media"
        assert relay.udp.counters.up >= 2  # through the relay, sent from ABROAD
        assert all(c.passed >= 2 for c in scenario.udp_censors)  # (the probes' and these)
    finally:
        with contextlib.suppress(OSError):
            await client.close()
        await server.stop()
