"""The client server's handshake contract (helper/proxy/listener.py) with a listener of the
test's own: its handshake replaces the client's stream (decrypting what the client sends) and
wraps the route's stream once connected (an init in clear, then encrypting toward the
destination) -- the shape of an endpoint that speaks an encrypted protocol of its own. Real
sockets on loopback, one `direct` route; the server does admission, the table, routing,
refusal and the relay as for every listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from helper.proxy import ClientConnection, ClientServer, Listener, Request
from helper.proxy.limits import Admission, Limits
from helper.routing import Route, Router
from helper.services import ServiceTable
from tests.support.peers import free_port
from tests.support.waiting import until
from transports import Endpoint, Stream, parse_chain
from transports.direct import DirectDialer
from transports.wrapped import WrappedStream

INIT = b"HELLO"  # what the wrapper sends toward the destination first, in clear
UPSTREAM_KEY = 0x5A


def xor(data: bytes, key: int) -> bytes:
    return bytes(b ^ key for b in data)


class XorStream(WrappedStream):
    """Bytes XORed with a key on the way in and out; what is put back is plaintext."""

    def __init__(self, inner: Stream, key: int) -> None:
        super().__init__(inner)
        self.key = key
        self._pending = b""

    async def read(self, n: int = 65536) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return xor(await self.inner.read(n), self.key)

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending

    def write(self, data: bytes) -> None:
        self.inner.write(xor(data, self.key))

    def raw_socket_stream(self) -> None:
        return None  # it changes every byte: never the relay's fast path


class XorListener(Listener):
    """The client's first byte is its key; everything after it is XORed with it."""

    kind = "xor"

    def __init__(self, target: Endpoint) -> None:
        super().__init__(
            Endpoint("127.0.0.1", 0),
            Admission(Limits(), logger=logging.getLogger("detour.proxy")),
            setting="test.xor",
            handshake_timeout=5.0,
            idle_timeout=30.0,
        )
        self.target = target

    async def handshake(self, conn: ClientConnection) -> Request | None:
        key = await conn.stream.read(1)
        if not key:
            return None

        async def toward_destination(stream: Stream) -> Stream:
            stream.write(INIT)
            return XorStream(stream, UPSTREAM_KEY)

        return Request(
            self.kind,
            self.target,
            client=XorStream(conn.stream, key[0]),
            upstream=toward_destination,
            retry_client_hello=False,
        )


class RecordingEcho:
    """Reads the init, then echoes everything; keeps what it received."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            init = await reader.readexactly(len(INIT))
            self.received += init
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[RecordingEcho, int]]:
    origin = RecordingEcho()
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    try:
        yield origin, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def serve(target: Endpoint) -> tuple[ClientServer, XorListener]:
    route = Route("direct", parse_chain("direct"), DirectDialer())
    server = ClientServer(Router([route], ServiceTable([]), "direct"))
    listener = server.add(XorListener(target))
    await server.start()
    return server, listener


async def test_a_handshake_replaces_the_client_stream_and_wraps_the_route_stream(echo) -> None:
    origin, port = echo
    server, listener = await serve(Endpoint("127.0.0.1", port))
    try:
        reader, writer = await asyncio.open_connection(*listener.sockets[0])
        key = 0x33
        payload = b"the quick brown fox " * 100
        writer.write(bytes([key]) + xor(payload, key))
        echoed = xor(await reader.readexactly(len(payload)), key)
        assert echoed == payload
        # The destination saw the wrapper's init in clear, then what it encrypted.
        assert bytes(origin.received) == INIT + xor(payload, UPSTREAM_KEY)
        (conn,) = server.connections.values()
        view = conn.view()
        assert (view.listener, view.protocol, view.target, view.route) == (
            "xor",
            "xor",
            f"127.0.0.1:{port}",
            "direct",
        )
        writer.close()
        await until(lambda: not server.connections)
    finally:
        await server.stop()


async def test_an_unreachable_target_resets_a_protocol_without_error_replies(caplog) -> None:
    caplog.set_level(logging.INFO, "detour")
    unused = free_port()
    server, listener = await serve(Endpoint("127.0.0.1", unused))
    try:
        reader, writer = await asyncio.open_connection(*listener.sockets[0])
        writer.write(b"\x33")
        with pytest.raises(ConnectionResetError):
            await reader.read(100)  # no error reply in this protocol: a reset says it
        await until(lambda: not server.connections)
        assert f"xor 127.0.0.1:{unused}: cannot reach 127.0.0.1:{unused}" in caplog.text
    finally:
        await server.stop()


async def test_a_client_that_leaves_before_its_first_byte_ends_quietly(echo) -> None:
    _, port = echo
    server, listener = await serve(Endpoint("127.0.0.1", port))
    try:
        _, writer = await asyncio.open_connection(*listener.sockets[0])
        writer.close()
        await until(lambda: not server.connections)
        assert listener.book.open_total == 0 and listener.book.handshaking_total == 0
    finally:
        await server.stop()
