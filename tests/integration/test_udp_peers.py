"""UDP through detour with real third-party programs: PySocks as the SOCKS5 UDP client,
dante (danted) as an upstream SOCKS5 proxy with UDP ASSOCIATE, coturn's turnserver as the
STUN server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from tests.conftest import config_text
from tests.support import peers
from tests.support.udp import associate, pysocks_echo
from transports import Endpoint
from transports.stun import binding_request, parse_message


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


async def test_pysocks_client_through_direct(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    payloads = [b"hello", bytes(range(256)) * 5 + b"x" * 120, b"\0" * 1400]
    answers = await asyncio.to_thread(pysocks_echo, engine.mixed_address, echo.address, payloads)
    assert answers == payloads


async def test_pysocks_client_through_dante_upstream(start_engine, echo) -> None:
    with peers.danted(udp=True) as dante:
        engine = await start_engine(
            config_text(routes={"dante": f"socks5://127.0.0.1:{dante.port}"})
        )
        payloads = [b"one", b"\xff" * 1400, b"three"]
        answers = await asyncio.to_thread(
            pysocks_echo, engine.mixed_address, echo.address, payloads
        )
        assert answers == payloads


async def test_dante_upstream_association_many_datagrams(start_engine, echo) -> None:
    with peers.danted(udp=True) as dante:
        engine = await start_engine(
            config_text(routes={"dante": f"socks5://127.0.0.1:{dante.port}"})
        )
        client = await associate(engine.mixed_address)
        try:
            for i in range(50):
                payload = b"%04d" % i + b"." * (i * 28)
                assert await client.echo(payload, echo.address) == payload
        finally:
            await client.close()


async def test_dante_without_udp_says_why(start_engine, echo, caplog) -> None:
    """An upstream that refuses UDP ASSOCIATE: the datagrams are dropped as no_route and the
    log names the route and the upstream's answer."""
    caplog.set_level(logging.INFO)
    with peers.danted() as dante:
        engine = await start_engine(
            config_text(routes={"dante": f"socks5://127.0.0.1:{dante.port}"})
        )
        listener = next(lst for lst in engine.server.listeners if lst.kind == "mixed")
        client = await associate(engine.mixed_address)
        try:
            client.send(b"x", echo.address)
            async with asyncio.timeout(10):
                while listener.udp.totals().no_route < 1:  # noqa: ASYNC110 - a counter
                    await asyncio.sleep(0.02)
        finally:
            await client.close()
    assert any("route 'dante'" in r.getMessage() for r in caplog.records)


async def test_coturn_stun_through_detour(start_engine) -> None:
    with peers.coturn_stun() as turn:
        engine = await start_engine(config_text())
        client = await associate(engine.mixed_address)
        try:
            request, transaction = binding_request()
            answer = parse_message(await client.echo(request, Endpoint("127.0.0.1", turn.port)))
            assert answer.transaction == transaction
            assert answer.type == 0x0101
            # The address coturn saw is detour's flow socket on this machine.
            assert answer.mapped is not None and answer.mapped.host == "127.0.0.1"
        finally:
            await client.close()


async def test_pysocks_client_through_a_shadowsocks_route(start_engine, echo) -> None:
    """A real SOCKS5 client's datagrams through detour's ss:// route to a real ss-server."""
    with peers.ss_server("chacha20-ietf-poly1305", "udp-secret", udp=True) as server:
        engine = await start_engine(config_text(routes={"ss": peers.ss_link(server)}))
        payloads = [b"one", bytes(range(256)) * 5, b"\0" * 1400]
        answers = await asyncio.to_thread(
            pysocks_echo, engine.mixed_address, echo.address, payloads
        )
        assert answers == payloads
