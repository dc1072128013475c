"""The MTProto endpoint's wait for the DC's first answer (helper/proxy/retry.py) ending in the
same turns of the event loop as the client's next bytes arrive: those bytes must still reach
the DC, all of them, before the end of stream. Through real sockets: clients that send a
first packet, pause for about the wait's length (each a little longer than the one before),
send their last packet and half-close; a DC that stays silent and counts what it receives
until the end of stream. A task that keeps the event loop busy makes each turn last a few
milliseconds, as a loaded machine does, so that some client's bytes land in the turns where
the deadline passes. (Before the fix, the last packet of one such connection in ten or so
was lost while its end of stream went on: what the 200-connection integrity test once saw
under load.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest

from tests.conftest import config_text
from tests.support.mtproxy_client import open_proxy
from transports.mtproto import INIT_LEN, Tag, accept

KEY = os.urandom(16).hex()
WAIT = 0.3  # [probe] first_answer
CONNECTIONS = 60
PACKET = 16 << 10
TURN = 0.01  # how long the busy task holds each turn of the event loop


class SilentDc:
    """Counts each connection's bytes until its end of stream, answers nothing, then
    closes. `first_seen[i]` is set once the first packet of client `i` (its first 4 bytes)
    has arrived: the moment detour starts waiting for the answer."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first_seen = [asyncio.Event() for _ in range(CONNECTIONS)]
        self.ended = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            _, ob = accept(await reader.readexactly(INIT_LEN))
            head = ob.decrypt(await reader.readexactly(8))  # the length, then client's number
            self.first_seen[int.from_bytes(head[4:], "big")].set()
            size = INIT_LEN + len(head)
            while data := await reader.read(1 << 20):
                size += len(data)
        self.received.append(size)
        if len(self.received) == CONNECTIONS:
            self.ended.set()
        writer.close()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]


async def busy(turn: float) -> None:
    while True:
        until = time.perf_counter() + turn
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


@pytest.mark.slow
async def test_the_last_packet_sent_as_the_first_answer_wait_ends_arrives(start_engine) -> None:
    dc = SilentDc()
    host, port = await dc.start()
    text = config_text(
        extra=f"""
        [probe]
        first_answer = "{int(WAIT * 1000)}ms"

        [[service]]
        name = "telegram"
        cidrs = ["127.0.0.0/8"]

        [mtproto_proxy]
        listen = "127.0.0.1:0"
        secrets = {{ al = "{KEY}" }}
        dcs = {{ 2 = "{host}:{port}" }}
        handshake_timeout = "30s"
        max_per_client = 0
        """
    )
    engine = await start_engine(text, probe_on_start=False)
    assert engine.mtproto is not None
    proxy = engine.mtproto.address_bound

    async def one(i: int) -> None:
        connection = await open_proxy(proxy, KEY, dc=2, tag=Tag.INTERMEDIATE)
        connection.send(i.to_bytes(4, "big") + bytes(PACKET - 4))
        await connection.drain()
        await dc.first_seen[i].wait()
        # Spread over the turns around the wait's end (it is noticed within a 0.1 s tick).
        await asyncio.sleep(WAIT - 0.15 + i * 0.3 / CONNECTIONS)
        connection.send(bytes(PACKET))
        await connection.drain()
        connection.half_close()
        while await connection.receive() is not None:
            pass  # until the DC's close comes back
        connection.close()

    spinner = asyncio.ensure_future(busy(TURN))
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(CONNECTIONS)))
            await dc.ended.wait()
    finally:
        spinner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spinner
        assert dc.server is not None
        dc.server.close()
    whole = 64 + 2 * (4 + PACKET)  # detour's init and both packets
    short = [n for n in dc.received if n != whole]
    assert not short, f"{len(short)} of {CONNECTIONS} connections lost bytes: {short}"
