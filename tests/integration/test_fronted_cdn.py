"""The fronted tunnel through real nginx as the CDN: TLS for the front name, routing by the
Host header to the relay, WebSocket upgrade passed on -- the shape of a real CDN edge."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from helper.proxy.relay import relay as relay_pump
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from tests.support import origins, peers
from tests.support.integrity import run_integrity
from tests.support.relays import relay_behind_a_front
from tests.support.sizes import transfer_size
from transports import DialOptions, Endpoint, Stream, parse_chain
from transports.tcp import SocketStream, StreamProtocol

pytestmark = pytest.mark.peer


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[RelayServer, RelayKeys, int]]:
    async with relay_behind_a_front(tmp_path) as stood:
        yield stood


async def test_tunnel_through_nginx(
    relay, test_ca: origins.TestCA, echo_origin, integrity_origin
) -> None:
    _, keys, relay_port = relay
    cert = test_ca.issue("cdn.test", "relay.test")
    with peers.nginx_front(["cdn.test"], cert, {"relay.test": ("127.0.0.1", relay_port)}) as edge:
        key = keys.add_client("alice", Endpoint("127.0.0.1", edge.port), "cdn.test", "relay.test")
        dialer = parse_chain("front:" + key.encode()).build(
            DialOptions(tls=test_ca.client_context())
        )

        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        stream.write(b"via nginx")
        await stream.drain()
        assert await stream.readexactly(9) == b"via nginx"
        stream.close()

        # Bulk, both ways, through the edge's proxying (half-close is not something every CDN
        # passes on; the exchange announces its length).
        stream = await dialer.dial(Endpoint("127.0.0.1", integrity_origin.port))
        reader, writer = await _as_asyncio_streams(stream)
        size = transfer_size(16 << 20)  # 4 MiB in make test: tests/support/sizes.py
        result = await run_integrity(reader, writer, up=size, down=size, half_close=False)
        assert result.ok_up and result.ok_down

        # Someone looking at the edge sees an ordinary site, whatever the Host.
        async with aiohttp.ClientSession() as session:
            for host, expected in (("cdn.test", "cdn edge"), ("relay.test", "Ink &amp; Margin")):
                async with session.get(
                    f"https://127.0.0.1:{edge.port}/", headers={"Host": host},
                    ssl=test_ca.client_context(), server_hostname="cdn.test",
                ) as response:  # fmt: skip
                    assert expected in await response.text()


async def _as_asyncio_streams(stream: Stream):
    """A detour Stream as asyncio (reader, writer) through a socket pair, for the integrity
    helper that speaks asyncio streams. The pump task ends with the streams."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    transport, protocol = await loop.create_connection(StreamProtocol, sock=left)
    ours = SocketStream(transport, protocol)  # type: ignore[arg-type]
    _pumps.add(task := asyncio.ensure_future(relay_pump(ours, stream)))
    task.add_done_callback(_pumps.discard)
    return await asyncio.open_connection(sock=right, limit=1 << 20)


_pumps: set[asyncio.Task] = set()
