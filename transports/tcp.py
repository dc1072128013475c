"""SocketStream: a Stream over an asyncio transport (plain TCP, or TLS via asyncio's SSL
transport), with bounded buffering in both directions.

Used on both sides of detour: for accepted client connections and for connections detour
dials. Because it owns the protocol object, the relay can take the transport over for its
transport-to-transport fast path (`detach`), including bytes already buffered here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections import deque
from typing import Any, cast

from .base import Stream

__all__ = ["SocketStream", "StreamProtocol", "connect_tcp", "reset_transport"]

# Stop reading from the socket once this much is buffered and unread; the kernel buffer and
# the peer's TCP window then hold the rest. Bounded memory per connection.
READ_HIGH_WATER = 256 * 1024
# A delivery at least this large is handed out alone rather than joined with the next.
WHOLE_DELIVERY = 32 * 1024


class StreamProtocol(asyncio.Protocol):
    """Buffers what the transport delivers until SocketStream.read asks for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """`loop`: the running loop, when the caller has it at hand (else looked up once)."""
        self.transport: asyncio.Transport | None = None
        self.tls = False
        # What the transport delivered and nobody read yet, each delivery as it came: a read
        # that takes a whole delivery returns it without a copy, and several are joined
        # once, by the read that takes them (never appended into one growing buffer, which
        # copies every byte once more and reallocates as it grows). `offset`: how much of
        # the first one was read already; `size`: the unread bytes in all of them.
        self.chunks: deque[bytes] = deque()
        self.offset = 0
        self.size = 0
        self.eof = False
        self.exc: BaseException | None = None
        self.lost = False
        self.reading_paused = False
        self.writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] | None = None
        self._loop = loop

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.transport = transport
        self.tls = transport.get_extra_info("sslcontext") is not None
        # Kept: looking the running loop up costs a system call per lookup on Python 3.11
        # (its fork check), and a connection waits for data several times.
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # kept: a buffer the transport may reuse is copied
        self.chunks.append(data)
        self.size += len(data)
        if self.size > READ_HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        # Keep the transport open: the other direction may still be flowing. (asyncio's TLS
        # transport ignores the answer and warns about True, so don't give it one.)
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        self.exc = exc
        self._wake_reader()
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._drain_waiters.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # helpers for SocketStream ------------------------------------------------------------

    def take(self, n: int, *, join: bool = False) -> bytes:
        """Up to `n` of the unread bytes (at least one is unread): a delivery as it came when
        it is taken whole, else one copy of what is taken. A large delivery is returned by
        itself even when more follow (one more read, instead of a copy of every byte);
        small ones are joined up to `n`. `join`: exactly min(n, unread) bytes, always."""
        chunks = self.chunks
        first = chunks[0]
        offset = self.offset
        left = len(first) - offset
        if left >= n or len(chunks) == 1 or (left >= WHOLE_DELIVERY and not join):
            if offset == 0 and left <= n:
                chunks.popleft()
                self.size -= left
                return first
            take = min(n, left)
            with memoryview(first) as view:  # one copy (a slice of a slice would be two)
                data = bytes(view[offset : offset + take])
            if take == left:
                chunks.popleft()
                self.offset = 0
            else:
                self.offset = offset + take
            self.size -= take
            return data
        parts: list[bytes | memoryview] = []
        want = n
        while chunks and want:
            first = chunks[0]
            left = len(first) - self.offset
            if left <= want:
                parts.append(memoryview(first)[self.offset :] if self.offset else first)
                chunks.popleft()
                self.offset = 0
                want -= left
            else:
                parts.append(memoryview(first)[self.offset : self.offset + want])
                self.offset += want
                want = 0
        self.size -= n - want
        return b"".join(parts)

    def take_all(self) -> bytes:
        """Every unread byte, in one buffer."""
        return self.take(self.size, join=True) if self.size else b""

    def put_back(self, data: bytes) -> None:
        """`data` in front of the unread bytes."""
        if self.offset:
            self.chunks[0] = self.chunks[0][self.offset :]
            self.offset = 0
        self.chunks.appendleft(bytes(data))
        self.size += len(data)

    def unread_size(self) -> int:
        """Bytes received and not read yet."""
        return self.size

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_readable(self) -> None:
        assert self._read_waiter is None, "concurrent read() on one stream"
        assert self._loop is not None, "connection_made first"
        self._read_waiter = self._loop.create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    async def wait_drained(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    async def wait_closed(self) -> None:
        if self.lost:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await self._closed


class SocketStream(Stream):
    """Stream over an asyncio transport whose protocol is a StreamProtocol."""

    def __init__(self, transport: asyncio.Transport, protocol: StreamProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self._detached = False

    @property
    def copies_writes(self) -> bool:
        """True when every write is taken in before `write` returns, so a writer may reuse
        its buffer at once (transports/websocket.py's frame buffer): the event loop's TLS
        transport over TLS 1.3 after its handshake, which encrypts each write into OpenSSL's
        outgoing buffer at once. (It sets a write aside, by reference, only while OpenSSL
        cannot take it: during a handshake, which TLS 1.3 has none of after the first
        without a post-handshake authentication this side never offers, or a TLS 1.2
        renegotiation.) A plain socket's transport may keep a reference to what it could
        not send yet: False."""
        if not self.protocol.tls:
            return False
        ssl_object = self.transport.get_extra_info("ssl_object")
        return ssl_object is not None and ssl_object.version() == "TLSv1.3"

    # reading -----------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        proto = self.protocol
        while not proto.size:
            if proto.eof:
                if proto.exc is not None and proto.lost:
                    raise (
                        proto.exc
                        if isinstance(proto.exc, OSError)
                        else ConnectionResetError(str(proto.exc))
                    )
                return b""
            await proto.wait_readable()
        data = proto.take(n)
        if proto.reading_paused and proto.size <= READ_HIGH_WATER // 2 and not proto.lost:
            proto.reading_paused = False
            self.transport.resume_reading()
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self.protocol.put_back(data)

    # writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.protocol.lost:
            raise ConnectionResetError("connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        proto = self.protocol
        if proto.lost:
            if proto.exc is not None:
                raise proto.exc if isinstance(proto.exc, OSError) else ConnectionResetError()
            raise ConnectionResetError("connection lost")
        if proto.writing_paused:
            await proto.wait_drained()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        if not self.protocol.lost and not self.transport.is_closing():
            self.transport.write_eof()

    # closing -----------------------------------------------------------------------------

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        reset_transport(self.transport)

    async def wait_closed(self) -> None:
        await self.protocol.wait_closed()

    def is_closing(self) -> bool:
        return self.transport.is_closing() or self.protocol.lost

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    # relay fast path ---------------------------------------------------------------------

    def raw_socket_stream(self) -> SocketStream | None:
        # A TLS transport carries plaintext in Python; only a plain socket can be piped.
        if self._detached or self.protocol.tls:
            return None
        return self

    def loop_tls_applies(self) -> bool:
        """True when TLS may run on the event loop's own transport over this stream
        (start_tls): a plain socket with nothing unread, not yet detached."""
        return not self._detached and not self.protocol.tls and not self.protocol.size

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, *, timeout: float
    ) -> SocketStream:
        """A TLS client handshake on the event loop's own TLS transport (uvloop's, or
        asyncio's: OpenSSL driven from compiled code, records read and written with no
        Python per record) over this stream's socket; the TLS stream on top of it. This
        stream must not be used afterwards. Raises what the loop raises (ssl.SSLError,
        ConnectionError, TimeoutError after `timeout`); see transports/tls.py's
        tls_connect_fast for the translation into a DialError."""
        if not self.loop_tls_applies():
            raise RuntimeError("start_tls needs a plain socket stream with nothing unread")
        loop = asyncio.get_running_loop()
        protocol = self.protocol
        self._detached = True
        tls_transport = await loop.start_tls(
            self.transport,
            protocol,
            context,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
        if tls_transport is None:  # the transport closed during the handshake
            raise ConnectionResetError("the connection closed during the TLS handshake")
        tls_transport = cast(asyncio.Transport, tls_transport)  # uvloop's: no subclass
        protocol.transport = tls_transport
        protocol.tls = True
        return SocketStream(tls_transport, protocol)

    def detach(self) -> tuple[asyncio.Transport, bytes, StreamProtocol]:
        """Give up the transport: return it, the unread bytes, and the old protocol (for its
        eof / lost / writing_paused state). The stream must not be used afterwards."""
        self._detached = True
        data = self.protocol.take_all()
        return self.transport, data, self.protocol


def reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP reset (SO_LINGER 0) so the peer learns the stream was cut, rather
    than reading a clean end of stream after a truncated transfer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ValueError):
            pass  # closed underneath us (uvloop says ValueError): abort() still releases it
    transport.abort()


async def connect_tcp(
    address: str,
    port: int,
    *,
    local_addr: tuple[str, int] | None = None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> SocketStream:
    """Open a TCP connection to an IP address (no name resolution here), with TLS on top
    when `tls` is given (the certificate is checked for `server_hostname`)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: StreamProtocol(loop),
        host=address,
        port=port,
        local_addr=local_addr,
        ssl=tls,
        server_hostname=server_hostname if tls is not None else None,
    )
    transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
    return SocketStream(transport, protocol)
