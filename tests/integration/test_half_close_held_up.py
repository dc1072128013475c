"""A client's end of stream queued behind an upload that every listener's relay holds up:
the client sends far more than the buffers on the way take and half-closes at once, while
the origin reads nothing until the client can push no more (the relay's reads paused by
backpressure, the end of stream behind the bytes). The origin then reads slowly; it must get
every byte, then the end of stream, and its answer must still reach the client. Through
detour in-process: SOCKS5 and HTTP CONNECT on a `direct` route (the relay's fast path),
SOCKS5 on a `tgws` route (MTProto over a WebSocket: the relay's fast path for it,
transports/wsfast.py, once the init is out), and the MTProto proxy
endpoint with a plain and an `ee` secret (its re-encrypting fast path)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable

import pytest

from helper.lab.telegram import web_endpoint_app
from tests.conftest import config_text
from tests.integration.test_tgws import DC2, serve_endpoint, tgws_config
from tests.support.clients import open_http_connect, open_socks5
from tests.support.mtproto import start_unwrapper, start_wrapper
from tests.support.mtproxy_client import start_proxy_wrapper
from tests.support.origins import TestCA

SIZE = 24 << 20  # more than every buffer on the way (socket buffers of a few MiB each hop)
PAYLOAD = os.urandom(1 << 20) * (SIZE >> 20)
Open = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class HeldOrigin:
    """Reads nothing until `go` is set; then reads all there is in small reads until the end
    of stream, and answers with the length and sha256 of what it got."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.go.wait()
        digest, size = hashlib.sha256(), 0
        try:
            while data := await reader.read(16 << 10):
                digest.update(data)
                size += len(data)
            writer.write(f"{size} {digest.hexdigest()}".encode())
            await writer.drain()
        except ConnectionError:
            pass  # the client's side of the test says what went wrong
        finally:
            writer.close()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]


async def held_up(transport: asyncio.WriteTransport) -> None:
    """Until the way is full: the client's unsent bytes stop going down (polled every 10 ms,
    the same for 20 polls in a row: the rest, if any, waits for the origin to read)."""
    last, same = -1, 0
    for _ in range(3000):
        size = transport.get_write_buffer_size()
        same = same + 1 if size == last else 0
        if same >= 20:
            return
        last = size
        await asyncio.sleep(0.01)
    raise AssertionError("the client's upload was never held up")


async def held_up_exchange(origin: HeldOrigin, open_stream: Open) -> None:
    reader, writer = await open_stream()
    try:
        writer.write(PAYLOAD)
        writer.write_eof()
        await held_up(writer.transport)
        origin.go.set()
        async with asyncio.timeout(60):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer == f"{SIZE} {hashlib.sha256(PAYLOAD).hexdigest()}".encode()


@pytest.mark.slow
@pytest.mark.parametrize("inbound", ["socks5", "http-connect"])
async def test_direct(start_engine, inbound: str) -> None:
    origin = HeldOrigin()
    host, port = await origin.start()
    engine = await start_engine(config_text(), probe_on_start=False)
    opener = open_socks5 if inbound == "socks5" else open_http_connect
    try:
        await held_up_exchange(origin, lambda: opener(engine.mixed_address, host, port))
    finally:
        assert origin.server is not None
        origin.server.close()


@pytest.mark.slow
async def test_tgws(start_engine, tmp_path) -> None:
    origin = HeldOrigin()
    unwrapper = await start_unwrapper(await origin.start())
    ca = TestCA(tmp_path / "ca")
    runner, port = await serve_endpoint(web_endpoint_app({2: unwrapper.address}), ca)
    engine = await start_engine(tgws_config(ca, port), probe_on_start=False)
    wrapper = await start_wrapper(engine.mixed_address, (DC2, 443))
    try:
        await held_up_exchange(
            origin, lambda: asyncio.open_connection(*wrapper.address, limit=1 << 20)
        )
    finally:
        await wrapper.stop()
        await runner.cleanup()
        await unwrapper.stop()
        assert origin.server is not None
        origin.server.close()


@pytest.mark.slow
@pytest.mark.parametrize("secret", ["plain", "ee"])
async def test_mtproto_endpoint(start_engine, secret: str) -> None:
    key = os.urandom(16)
    chosen = key.hex() if secret == "plain" else "ee" + key.hex() + b"mask.test".hex()
    origin = HeldOrigin()
    unwrapper = await start_unwrapper(await origin.start())
    dc_host, dc_port = unwrapper.address
    text = config_text(
        extra=f"""
        [[service]]
        name = "telegram"
        cidrs = ["127.0.0.0/8"]

        [mtproto_proxy]
        listen = "127.0.0.1:0"
        secrets = {{ al = "{chosen}" }}
        mask = "127.0.0.1:9"
        dcs = {{ 2 = "{dc_host}:{dc_port}" }}
        handshake_timeout = "30s"
        """
    )
    engine = await start_engine(text, probe_on_start=False)
    assert engine.mtproto is not None
    wrapper = await start_proxy_wrapper(engine.mtproto.address_bound, chosen)
    try:
        await held_up_exchange(
            origin, lambda: asyncio.open_connection(*wrapper.address, limit=1 << 20)
        )
    finally:
        await wrapper.stop()
        await unwrapper.stop()
        assert origin.server is not None
        origin.server.close()
