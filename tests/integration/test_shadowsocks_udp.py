"""Shadowsocks UDP (transports/shadowsocks/udp.py, datagrams.py) against real servers:
shadowsocks-libev's `ss-server` in tcp_and_udp mode for the AEAD ciphers, sing-box for the
2022 AES ciphers; datagrams to the lab's UDP echo and back, intact, up to the path MTU, and
1,000 of them with loss and reordering counted. A server that answers with packets under
another key gets nothing through."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from tests.integration.test_shadowsocks import (  # noqa: F401 (key_server: a fixture)
    AEAD,
    key_server,
    ss2022_inbound,
)
from tests.support import peers
from tests.support.udpecho import Inbox, echo_run
from transports import DialError, DialOptions, parse_chain
from transports.datagram import NoDatagrams, datagram_dialer
from transports.shadowsocks.datagrams import ShadowsocksDatagrams

pytestmark = pytest.mark.peer


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


def _datagrams(link: str, options: DialOptions | None = None):
    chain = parse_chain(link)
    dialer = datagram_dialer("ss", chain, chain.build(options or DialOptions()))
    assert isinstance(dialer, ShadowsocksDatagrams)
    return dialer


async def _exchange(link: str, echo, count: int = 200, options=None) -> None:
    inbox = Inbox()
    session = _datagrams(link, options).open(inbox)
    try:
        await session.prepare(echo.address)
        # The first datagrams may meet a server still binding its UDP socket: ask until
        # one comes back, then count.
        async with asyncio.timeout(10):
            while True:
                session.send(b"hello", echo.address)
                try:
                    assert await inbox.get(0.3) == (b"hello", echo.address)
                    break
                except TimeoutError:
                    continue
        while not inbox.queue.empty():
            inbox.queue.get_nowait()
        for size in (1, 1200, 1400):
            payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
            session.send(payload, echo.address)
            assert await inbox.get() == (payload, echo.address)

        async def receive() -> bytes:
            return (await inbox.get())[0]

        result = await echo_run(
            lambda data: session.send(data, echo.address), receive, count, window=16
        )
        assert result.corrupt == 0 and result.duplicates == 0
        assert result.lost <= count // 100, result  # loopback UDP: next to nothing
        assert session.malformed == 0
    finally:
        session.close()


@pytest.mark.parametrize("method", AEAD)
async def test_aead_udp_through_ss_server(method: str, echo) -> None:
    with peers.ss_server(method, "udp-secret", udp=True) as server:
        await _exchange(peers.ss_link(server), echo, 1000 if method == AEAD[0] else 200)


@pytest.mark.parametrize("method", ["2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm"])
async def test_2022_udp_through_sing_box(method: str, echo) -> None:
    inbound, password = ss2022_inbound(method)
    with peers.sing_box_server(inbound) as server:
        link = f"ss://{method}:{quote(password, safe='')}@127.0.0.1:{server.port}"
        await _exchange(link, echo, 1000 if method.endswith("128-gcm") else 200)


async def test_outline_dynamic_key_udp(key_server, test_ca, echo) -> None:  # noqa: F811
    """ssconf://: UDP to the server the key's config names (fetched over HTTPS)."""
    port, bodies = key_server
    with peers.ss_server("chacha20-ietf-poly1305", "outline-pw", udp=True) as server:
        bodies["/k"] = (peers.ss_link(server) + "#from-the-key").encode()
        options = DialOptions(tls=test_ca.client_context())
        await _exchange(f"ssconf://127.0.0.1:{port}/k", echo, 100, options)


async def test_outline_config_with_its_own_udp_part(key_server, test_ca, echo) -> None:  # noqa: F811
    """An Outline YAML config whose `udp` part names another server (another key): the
    datagrams go there, and a part detour cannot use refuses UDP with its reason."""
    port, bodies = key_server
    with (
        peers.ss_server("chacha20-ietf-poly1305", "tcp-pw") as tcp,
        peers.ss_server("aes-256-gcm", "udp-pw", udp=True) as udp,
    ):
        bodies["/k"] = (
            "transport:\n  $type: tcpudp\n"
            f"  tcp: {{$type: shadowsocks, endpoint: '127.0.0.1:{tcp.port}', "
            "cipher: chacha20-ietf-poly1305, secret: tcp-pw}\n"
            f"  udp: {{$type: shadowsocks, endpoint: '127.0.0.1:{udp.port}', "
            "cipher: aes-256-gcm, secret: udp-pw}\n"
        ).encode()
        options = DialOptions(tls=test_ca.client_context())
        await _exchange(f"ssconf://127.0.0.1:{port}/k", echo, 100, options)
        bodies["/bad"] = (
            "transport:\n  $type: tcpudp\n"
            f"  tcp: {{$type: shadowsocks, endpoint: '127.0.0.1:{tcp.port}', "
            "cipher: chacha20-ietf-poly1305, secret: tcp-pw}\n"
            "  udp: {$type: websocket, url: 'wss://cdn.example/udp'}\n"
        ).encode()
        session = _datagrams(f"ssconf://127.0.0.1:{port}/bad", options).open(Inbox())
        try:
            with pytest.raises(DialError, match=r"transport\.udp: \$type 'websocket'"):
                await session.prepare(echo.address)
        finally:
            session.close()


async def test_a_wrong_key_gets_nothing_through(echo) -> None:
    with peers.ss_server("aes-128-gcm", "right", udp=True) as server:
        inbox = Inbox()
        session = _datagrams(peers.ss_link(server, password="wrong")).open(inbox)
        try:
            await session.prepare(echo.address)
            for _ in range(5):
                session.send(b"probe", echo.address)
            await asyncio.sleep(0.3)  # a negative: nothing may arrive
            assert inbox.queue.empty() and echo.received == 0
        finally:
            session.close()


def test_chacha_2022_and_chains_say_they_carry_no_udp() -> None:
    chain = parse_chain("ss://2022-blake3-chacha20-poly1305:" + "A" * 43 + "=@127.0.0.1:1")
    with pytest.raises(NoDatagrams, match="XChaCha20"):
        datagram_dialer("x", chain, chain.build(DialOptions()))
    chain = parse_chain("socks5://127.0.0.1:1|ss://aes-128-gcm:pw@127.0.0.1:2")
    with pytest.raises(NoDatagrams, match="straight to the server"):
        datagram_dialer("y", chain, chain.build(DialOptions()))
    chain = parse_chain("socks5://127.0.0.1:1|ssconf://127.0.0.1:3/k")
    with pytest.raises(NoDatagrams, match="straight to the server"):
        datagram_dialer("y", chain, chain.build(DialOptions()))
