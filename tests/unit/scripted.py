"""A Stream that serves scripted chunks, for driving read_message and parsers without sockets
(httpcore's mock backend, in miniature). Shared by tests/unit and tests/fuzz."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from transports.base import Stream


class ScriptedStream(Stream):
    """Reads return the scripted chunks in order (a chunk longer than the read size is split),
    then b"" for end of stream. Records the size of every read and every unread, and every
    write separately (`writes`), so a test can assert the boundaries a wrapper produced."""

    def __init__(self, chunks: Iterable[bytes] = ()) -> None:
        self.chunks: deque[bytes] = deque(c for c in chunks if c)
        self.read_sizes: list[int] = []
        self.unread_calls: list[bytes] = []
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.eof_written = False
        self.closed = False

    async def read(self, n: int = 65536) -> bytes:
        self.read_sizes.append(n)
        if not self.chunks:
            return b""
        chunk = self.chunks.popleft()
        if len(chunk) > n:
            self.chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    def unread(self, data: bytes) -> None:
        self.unread_calls.append(data)
        if data:
            self.chunks.appendleft(data)

    def remaining(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        self.written += data
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        return None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed


def run_without_loop(coro):
    """Run a coroutine that never really suspends (it only awaits ScriptedStream) to
    completion without an event loop: fast enough for property tests."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine suspended: it awaited something other than the script")
