"""WrappedStream: a Stream that hands everything to an inner stream. The DPI-evasion layers
(`tlsfrag`, `split`) subclass it and change only how the first bytes are written; after
those bytes they are pure pass-through, so `raw_socket_stream()` then returns the inner
stream's socket and the relay can move the rest transport-to-transport."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from .base import Stream

__all__ = ["HeldBytes", "WrappedStream", "set_no_delay"]


class WrappedStream(Stream):
    def __init__(self, inner: Stream) -> None:
        self.inner = inner

    def shaping(self) -> bool:
        """True while the wrapper may still alter what is written; subclasses override it."""
        return False

    async def read(self, n: int = 65536) -> bytes:
        return await self.inner.read(n)

    def unread(self, data: bytes) -> None:
        self.inner.unread(data)

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        self.inner.write_eof()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def raw_socket_stream(self) -> Any:
        return None if self.shaping() else self.inner.raw_socket_stream()


class HeldBytes:
    """Bytes a stream hands out before reading on (given back with unread(), or converted
    beyond what a read asked for): in order, at most `n` per take."""

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def put_back(self, data: bytes | bytearray | memoryview) -> None:
        """`data` in front of what is held."""
        if data:
            self._chunks.appendleft(bytes(data))

    def add(self, data: bytes) -> None:
        """`data` after what is held."""
        if data:
            self._chunks.append(data)

    def take(self, n: int) -> bytes:
        """Up to `n` bytes of the first held chunk (something is held)."""
        data = self._chunks.popleft()
        if len(data) > n:
            self._chunks.appendleft(data[n:])
            data = data[:n]
        return data


def set_no_delay(stream: Stream) -> None:
    """Make every write its own TCP segment (no Nagle coalescing), where there is a socket.

    asyncio and uvloop already set TCP_NODELAY on the connections they make; the layers that
    rely on it set it again so they do not depend on that default.
    """
    sock = stream.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # the connection is already gone; the next write reports that
