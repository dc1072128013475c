"""`split`: send the first bytes of a stream as separate TCP segments, so that a DPI box
that looks only at the first segment of a connection sees a piece of the TLS ClientHello (or
HTTP request) that does not contain the server name.

`split:5,40` sends bytes 0-4, then 5-39, each in its own send() with TCP_NODELAY, then
the rest as the client writes it. Nothing is held back: when the client writes fewer bytes
than an offset, they go out at once, and the cut is made inside a later write. A TCP peer
reassembles the stream, so the server sees exactly the bytes that were written.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Dialer, Endpoint, Stream
from .wrapped import WrappedStream, set_no_delay

__all__ = ["SplitDialer", "SplitStream"]


class SplitStream(WrappedStream):
    def __init__(self, inner: Stream, offsets: Sequence[int]) -> None:
        super().__init__(inner)
        self._cuts = list(offsets)  # stream offsets still ahead, increasing
        self._written = 0

    def shaping(self) -> bool:
        return bool(self._cuts)

    def write(self, data: bytes) -> None:
        while self._cuts and data:
            room = self._cuts[0] - self._written
            piece, data = data[:room], data[room:]
            self.inner.write(piece)
            self._written += len(piece)
            if self._written == self._cuts[0]:
                del self._cuts[0]
        if data:
            self.inner.write(data)


class SplitDialer:
    def __init__(self, inner: Dialer, offsets: Sequence[int]) -> None:
        if not offsets or any(b <= a for a, b in zip((0, *offsets), offsets, strict=False)):
            raise ValueError("split offsets must be positive and strictly increasing")
        self.inner = inner
        self.offsets = tuple(offsets)

    async def dial(self, target: Endpoint) -> Stream:
        stream = await self.inner.dial(target)
        set_no_delay(stream)
        return SplitStream(stream, self.offsets)

    def __repr__(self) -> str:
        return f"SplitDialer({self.inner!r}, {list(self.offsets)})"
