"""tls_connect_fast: TLS on the event loop's own transport over a bare socket (both loops),
TLS in Python over anything wrapped (what `tlsfrag` needs), the same DialErrors as
tls_connect's, and a frame buffer reused under the loop's TLS (copies_writes) that never
changes what was sent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator

import pytest

from transports import DialError, Failure, Op
from transports.tcp import SocketStream, connect_tcp
from transports.tls import TlsStream, loop_tls_applies, tls_connect_fast
from transports.websocket import WebSocketStream, parse_frame
from transports.wrapped import WrappedStream

LOOPS = ["asyncio", "uvloop"]


def run(loop: str, coro) -> object:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(coro)
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext, sink: list[bytes]) -> AsyncIterator[int]:
    """A TLS server (asyncio's streams) that answers "hello" and keeps what it reads."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 20):
                sink.append(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_bare_socket_gets_the_loops_tls_and_a_wrapped_one_python_tls(test_ca, loop) -> None:
    async def main() -> None:
        sink: list[bytes] = []
        async with tls_server(test_ca.server_context("origin.test"), sink) as port:
            bare = await connect_tcp("127.0.0.1", port)
            assert loop_tls_applies(bare)
            tls = await tls_connect_fast(bare, test_ca.client_context(), "origin.test")
            assert type(tls) is SocketStream and tls.get_extra_info("ssl_object") is not None
            assert await tls.readexactly(5) == b"hello"
            tls.close()
            wrapped = WrappedStream(await connect_tcp("127.0.0.1", port))
            assert not loop_tls_applies(wrapped)
            tls = await tls_connect_fast(wrapped, test_ca.client_context(), "origin.test")
            assert isinstance(tls, TlsStream)
            assert await tls.readexactly(5) == b"hello"
            tls.close()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_handshake_failures_are_dial_errors(test_ca, tmp_path, loop) -> None:
    async def main() -> None:
        async with tls_server(test_ca.server_context("other.test"), []) as port:
            bare = await connect_tcp("127.0.0.1", port)
            with pytest.raises(DialError) as caught:
                await tls_connect_fast(bare, test_ca.client_context(), "origin.test")
            assert caught.value.op is Op.TLS_HANDSHAKE
            assert "certificate" in caught.value.detail
            assert bare.is_closing()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never answers the ClientHello

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        bare = await connect_tcp("127.0.0.1", port)
        with pytest.raises(DialError) as caught:
            await tls_connect_fast(bare, test_ca.client_context(), "origin.test", timeout=0.3)
        assert caught.value.failure is Failure.TIMEOUT
        assert caught.value.op is Op.TLS_HANDSHAKE
        server.close()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_websocket_frames_from_a_reused_buffer_arrive_intact(test_ca, loop) -> None:
    """The client WebSocket reuses one frame buffer over the loop's TLS 1.3 (it copies each
    write): frames of one size in a row, each different, arrive as written."""

    async def main() -> None:
        sink: list[bytes] = []
        async with tls_server(test_ca.server_context("origin.test"), sink) as port:
            bare = await connect_tcp("127.0.0.1", port)
            tls = await tls_connect_fast(bare, test_ca.client_context(), "origin.test")
            assert tls.copies_writes  # TLS 1.3 (the lab's server offers it)
            ws = WebSocketStream(tls, client=True)
            assert ws._scratch is not None
            payloads = [os.urandom(300_000) for _ in range(8)]
            for payload in payloads:
                ws.write_message(payload)
            await ws.drain()
            expected = sum(len(p) + 14 for p in payloads)  # 10-byte head + 4-byte key
            for _ in range(500):
                if sum(map(len, sink)) >= expected:
                    break
                await asyncio.sleep(0.01)
            wire = b"".join(sink)
            assert len(wire) == expected
            at = 0
            for payload in payloads:
                used, frame = parse_frame(wire, start=at, expect_masked=True, max_frame=1 << 20)
                assert bytes(frame.payload) == payload
                at += used
            ws.abort()

    run(loop, main())
