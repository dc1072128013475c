"""The datagram side of routes on loopback: a direct flow closes after its idle time and is
opened again by the next datagram; an upstream's association is made again after the
upstream closed it."""

from __future__ import annotations

import asyncio

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from tests.support import peers
from transports import DialOptions, Endpoint, parse_chain
from transports.datagram import DirectDatagrams, datagram_dialer


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


class _Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()

    def __call__(self, payload: bytes, source: Endpoint) -> None:
        self.queue.put_nowait((payload, source))

    async def get(self) -> tuple[bytes, Endpoint]:
        return await asyncio.wait_for(self.queue.get(), 5)


async def _until(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - session state, no event
            await asyncio.sleep(0.01)


async def test_direct_flow_expires_when_idle_and_comes_back(echo) -> None:
    inbox = _Inbox()
    session = DirectDatagrams(idle=0.1).open(inbox)
    try:
        await session.prepare(echo.address)
        session.send(b"a", echo.address)
        assert await inbox.get() == (b"a", echo.address)
        await _until(lambda: session.flows == 0)
        assert not session.ready(echo.address)
        await session.prepare(echo.address)
        session.send(b"b", echo.address)
        assert await inbox.get() == (b"b", echo.address)
    finally:
        session.close()


async def test_socks5_upstream_associates_again_after_it_ends(echo) -> None:
    with peers.danted(udp=True) as dante:
        chain = parse_chain(f"socks5://127.0.0.1:{dante.port}")
        dialer = datagram_dialer("dante", chain, chain.build(DialOptions()))
        inbox = _Inbox()
        session = dialer.open(inbox)
        try:
            await session.prepare(echo.address)
            session.send(b"first", echo.address)
            assert (await inbox.get())[0] == b"first"
            session._control.abort()  # the association's TCP connection ends
            await _until(lambda: not session.ready(echo.address))
            await session.prepare(echo.address)
            session.send(b"second", echo.address)
            assert (await inbox.get())[0] == b"second"
        finally:
            session.close()
