"""MTProto transport packets: how the abridged, intermediate and padded intermediate
transports frame each MTProto message (core.telegram.org/mtproto/mtproto-transports).
Sans-IO: bytes in, packets out.

    abridged        +-----+---------------------+     length in 4-byte words; 0x7f then
                    | len | payload (len*4)     |     three bytes little-endian for 127
                    +-----+---------------------+     words or more
                    | 7f  | len (3, LE) | payload |
    intermediate    +-----------+----------------+    length in bytes, little-endian
                    | len (4)   | payload (len)  |
    padded          +-----------+----------------+----------+   the length counts the 0-15
                    | len (4)   | payload        | padding  |   random padding bytes
                    +-----------+----------------+----------+

A client may set the length's top bit (abridged: of its first byte; intermediate: of the
32-bit length) to ask for a quick acknowledgement; it is not part of the length.

`PacketSplitter` finds packet boundaries in a stream that may be encrypted (obfuscated2):
given a way to reveal a packet's length field at its stream offset, it cuts the bytes as they
were sent, whole packets only, and never trusts a length beyond its limit.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from .obfuscated2 import Tag

__all__ = [
    "MAX_PACKET",
    "FramingError",
    "PacketReader",
    "PacketSplitter",
    "encode_packet",
]

# The largest packet accepted: a file part of 512 KiB (uploads) or 1 MiB (downloads) with
# MTProto's headers and encryption fits with room to spare.
MAX_PACKET = 2 << 20
_QUICK_ACK = 0x80000000


class FramingError(ValueError):
    """A length field no packet can have (empty, or beyond the limit)."""


def encode_packet(
    tag: Tag, payload: bytes, *, urandom: Callable[[int], bytes] = os.urandom
) -> bytes:
    """One packet carrying `payload` (a whole number of 4-byte words for abridged)."""
    length = len(payload)
    if tag is Tag.ABRIDGED:
        if length % 4:
            raise ValueError("an abridged packet carries whole 4-byte words")
        words = length // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return head + payload
    if tag is Tag.PADDED:
        padding = urandom(urandom(1)[0] % 16)
        return struct.pack("<I", length + len(padding)) + payload + padding
    return struct.pack("<I", length) + payload


Reveal = Callable[[int, bytes], bytes]


def _identity(offset: int, raw: bytes) -> bytes:
    return raw


class PacketSplitter:
    """Cuts a byte stream into whole transport packets, each as it was sent.

    `reveal(offset, raw)` turns the raw bytes of a length field at that stream offset into
    plaintext (the keystream's XOR for an encrypted stream; the default leaves them). `feed`
    returns the packets completed so far: views into the data given when a packet lies
    within one feed, one joined copy when it spans several; the rest waits for more. Raises
    FramingError on a length field no packet can have; after that the splitter is not to be
    fed again.
    """

    def __init__(self, tag: Tag, *, reveal: Reveal = _identity, limit: int = MAX_PACKET) -> None:
        self.tag = tag
        self.limit = limit
        self._reveal = reveal
        self._held: list[bytes | memoryview] = []  # the start of an incomplete packet
        self._held_size = 0
        self._need: int | None = None  # that packet's whole size, once its length is read
        self.offset = 0  # stream offset of the first byte not yet returned in a packet

    @property
    def pending(self) -> int:
        """Bytes held back: the start of a packet not yet complete."""
        return self._held_size

    def take_pending(self) -> bytes:
        """The incomplete packet's bytes, handed out as they are (the stream is ending)."""
        held = b"".join(self._held)
        self.offset += len(held)
        self._held, self._held_size, self._need = [], 0, None
        return held

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        return [
            parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
            for parts in self.feed_parts(data)
        ]

    def feed_parts(self, data: bytes | bytearray | memoryview) -> list[list[memoryview | bytes]]:
        """As `feed`, each packet as the list of its pieces (one view when it lies within
        one feed): for a writer that copies them anyway (into a WebSocket frame), so a
        packet that spans feeds is not joined first."""
        # Views of `data` outlive this call (a packet still incomplete is held): only an
        # immutable buffer is held as it is.
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        packets: list[list[memoryview | bytes]] = []
        pos = 0
        if self._held:
            pos = self._complete(view, packets)
            if self._held:
                return packets
        end = len(view)
        while True:
            size = self._size(view, pos, end, self.offset)
            if size is None or end - pos < size:
                break
            packets.append([view[pos : pos + size]])
            pos += size
            self.offset += size
        if pos < end:
            self._held, self._held_size = [view[pos:]], end - pos
            self._need = self._size(view, pos, end, self.offset)
        return packets

    def _complete(self, view: memoryview, packets: list[list[memoryview | bytes]]) -> int:
        """Add the start of `view` to the held packet; returns how much of it was used."""
        if self._need is None:  # its length field is still incomplete: a few bytes
            head = memoryview(b"".join(self._held) + bytes(view[:4]))
            self._need = self._size(head, 0, len(head), self.offset)
            if self._need is None:
                self._held, self._held_size = [bytes(head)], len(head)
                return len(view)
            self._held, self._held_size = [bytes(head[: self._held_size])], self._held_size
        missing = self._need - self._held_size
        if len(view) < missing:
            self._held.append(view)
            self._held_size += len(view)
            return len(view)
        packets.append([*self._held, view[:missing]])
        self.offset += self._need
        self._held, self._held_size, self._need = [], 0, None
        return missing

    def packet_size(self, data: bytes | bytearray | memoryview, pos: int, at: int) -> int | None:
        """The whole size (length field included) of the packet whose first bytes are
        `data[pos:]`, at stream offset `at`; None until its length field is all there.
        Raises FramingError as `feed` does. For a writer that cuts the stream itself."""
        view = data if isinstance(data, memoryview) else memoryview(data)
        return self._size(view, pos, len(view), at)

    def _size(self, view: memoryview, pos: int, end: int, at: int) -> int | None:
        """The whole packet's size (length field included) starting at `pos` (stream offset
        `at`), or None until its length field has arrived."""
        if self.tag is Tag.ABRIDGED:
            if end - pos < 1:
                return None
            first = self._reveal(at, bytes(view[pos : pos + 1]))[0] & 0x7F
            if first < 0x7F:
                head, length = 1, first * 4
            else:
                if end - pos < 4:
                    return None
                plain = self._reveal(at, bytes(view[pos : pos + 4]))
                head, length = 4, int.from_bytes(plain[1:4], "little") * 4
        else:
            if end - pos < 4:
                return None
            (raw,) = struct.unpack("<I", self._reveal(at, bytes(view[pos : pos + 4])))
            head, length = 4, raw & ~_QUICK_ACK
        if length == 0:
            raise FramingError("an empty packet")
        if length > self.limit:
            raise FramingError(f"a packet of {length} bytes (at most {self.limit})")
        return head + length


class PacketReader:
    """Packets' payloads from a plaintext stream (a client's or a server's, decrypted).

    `feed` returns each complete packet's payload (padding included for the padded
    transport: the MTProto message inside says its own length). A quick-ack flag is
    dropped. Raises FramingError as PacketSplitter does."""

    def __init__(self, tag: Tag, *, limit: int = MAX_PACKET) -> None:
        self._splitter = PacketSplitter(tag, limit=limit)

    @property
    def pending(self) -> int:
        return self._splitter.pending

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        payloads = []
        for packet in self._splitter.feed(data):
            abridged = self._splitter.tag is Tag.ABRIDGED
            head = 1 if abridged and packet[0] & 0x7F < 0x7F else 4
            payloads.append(bytes(packet[head:]))
        return payloads
