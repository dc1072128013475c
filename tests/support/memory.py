"""An in-memory duplex pair of Streams: what one end writes, the other reads. For running
real protocol code on both ends (TLS client and server) in one event loop without sockets.

Each end keeps every write separately when asked (`record=True`), so a test can assert the
exact chunks a layer handed to the stream below it. Flow control is real: `drain` waits
while the other end has more than `limit` bytes unread, so a writer that drains cannot run
ahead of a reader that does not read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from transports.base import Stream


class MemoryStream(Stream):
    def __init__(self, name: str, limit: int, record: bool) -> None:
        self.name = name
        self.limit = limit
        self.peer: MemoryStream = self  # set by memory_pipe
        self.buffer = bytearray()  # what the peer wrote and we have not read
        self.writes: list[bytes] | None = [] if record else None
        self.eof = False  # the peer will write no more
        self.reset = False  # the peer aborted: reads fail
        self.closed = False  # this end was closed or aborted
        self.eof_written = False
        self._changed = asyncio.Event()  # anything about this end's buffer or state

    def _notify(self) -> None:
        self._changed.set()

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # reading -----------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        while True:
            if self.reset:
                raise ConnectionResetError(f"{self.peer.name} reset the connection")
            if self.buffer:
                data = bytes(self.buffer[:n])
                del self.buffer[:n]
                self.peer._notify()  # a writer may be waiting in drain()
                return data
            if self.eof or self.closed:
                return b""
            await self._wait()

    def unread(self, data: bytes) -> None:
        self.buffer[:0] = data

    # writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError(f"{self.name} is closed")
        if self.eof_written:
            raise RuntimeError(f"{self.name}: write after write_eof")
        if not data:
            return
        if self.writes is not None:
            self.writes.append(bytes(data))
        if not self.peer.closed:  # like TCP: bytes for a closed socket are lost
            self.peer.buffer += data
            self.peer._notify()

    async def drain(self) -> None:
        while len(self.peer.buffer) > self.limit and not self.peer.closed:
            if self.closed:
                raise ConnectionResetError(f"{self.name} is closed")
            await self._wait()
        if self.reset:
            raise ConnectionResetError(f"{self.peer.name} reset the connection")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self.eof_written and not self.closed:
            self.eof_written = True
            self.peer.eof = True
            self.peer._notify()

    # closing -----------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.write_eof()
        self.closed = True
        self.buffer.clear()
        self._notify()
        self.peer._notify()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.buffer.clear()
        if not self.peer.closed:
            self.peer.reset = True
            self.peer.buffer.clear()  # a reset discards what was in flight
        self._notify()
        self.peer._notify()

    async def wait_closed(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer.name
        return default


def memory_pipe(
    limit: int = 256 * 1024, *, record: bool = False, names: tuple[str, str] = ("client", "server")
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends. `limit`: bytes a writer may have unread at the other end before
    its drain() waits."""
    a = MemoryStream(names[0], limit, record)
    b = MemoryStream(names[1], limit, record)
    a.peer, b.peer = b, a
    return a, b
