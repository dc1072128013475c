"""`tlsfrag`: send the TLS ClientHello as several TLS records, so that a DPI box that reads
only the first record never sees the whole server name (SNI).

The first bytes a client writes are held until the first TLS record is complete. If it is a
ClientHello, its handshake message is cut at the chosen offsets and each piece goes out in a
record of its own, with the original record's type and version; the server's TLS stack
reassembles the handshake message from the records (RFC 8446 §5.1 allows a handshake
message to span records). Anything else — not TLS, a malformed record, a ClientHello without
a server name for `sni` — is written unchanged. After the first record the stream is pure
pass-through.

TLS record (RFC 8446 §5.1)::

    +------+---------+---------+----------------------------+
    | type | version | length  | fragment (length bytes)     |   type 0x16 = handshake
    |  1   |    2    |    2    | at most 2^14                |   version 0x03 0x01..0x03
    +------+---------+---------+----------------------------+

ClientHello handshake message (RFC 8446 §4.1.2), the record's fragment::

    msg_type(1)=0x01  length(3)  legacy_version(2)  random(32)
    session_id<0..32>(1-byte length)  cipher_suites<2..2^16-2>(2)
    compression_methods<1..2^8-1>(1)  extensions<8..2^16-1>(2)

    extension: type(2) length(2) data; server_name (RFC 6066 §3) is type 0x0000:
    server_name_list<1..2^16-1>(2) { name_type(1)=0x00 host_name<1..2^16-1>(2) }

Offsets in `tlsfrag:N` count from the start of the handshake message (after the 5-byte record
header), as in Outline's tlsfrag.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from .base import Dialer, Endpoint, Stream
from .wrapped import WrappedStream, set_no_delay

__all__ = [
    "MAX_RECORD",
    "Fragmenting",
    "HelloRead",
    "TlsFragDialer",
    "TlsFragStream",
    "fragment_client_hello",
    "read_client_hello",
    "server_name",
    "server_name_span",
]

RECORD_HEADER = 5
MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes
CONTENT_HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
NAME_TYPE_HOST = 0x00


@dataclass(frozen=True)
class Fragmenting:
    """Where to cut the ClientHello, and whether each record gets its own TCP segment."""

    offsets: tuple[int, ...] = ()  # into the handshake message, each >= 1
    sni: bool = False  # also cut in the middle of the server name
    segments: bool = False

    def cuts(self, hello: bytes) -> list[int]:
        """The cut points for this handshake message: sorted, each inside it."""
        points = set(self.offsets)
        if self.sni:
            span = server_name_span(hello)
            if span is not None:
                start, end = span
                # The middle of the name: neither record carries it whole. A one-byte name
                # goes entirely into the second record.
                points.add(start + (end - start) // 2)
        return sorted(p for p in points if 0 < p < len(hello))


# --- parsing: pure functions over untrusted bytes -------------------------------------------


class _Malformed(Exception):
    """A length or field does not fit: the bytes are not what we can safely rewrite."""


class _Reader:
    """Reads fields inside [pos, end) and never past it, whatever a length field claims."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def number(self, width: int) -> int:
        if self.pos + width > self.end:
            raise _Malformed
        value = int.from_bytes(self.data[self.pos : self.pos + width], "big")
        self.pos += width
        return value

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise _Malformed
        self.pos += n

    def vector(self, width: int) -> _Reader:
        """A length-prefixed vector as a reader of its own; this reader moves past it."""
        length = self.number(width)
        start = self.pos
        self.skip(length)
        return _Reader(self.data, start, start + length)

    def done(self) -> bool:
        return self.pos == self.end


def server_name_span(hello: bytes) -> tuple[int, int] | None:
    """Where the host name of the server_name extension lies in a ClientHello handshake
    message, as (start, end) offsets into `hello`; None if `hello` is not exactly one
    well-formed ClientHello with a host name."""
    try:
        reader = _Reader(hello, 0, len(hello))
        if reader.number(1) != CLIENT_HELLO:
            return None
        body = reader.vector(3)
        if not reader.done():
            return None  # more than one handshake message in the record: leave it alone
        body.skip(2 + 32)  # legacy_version, random
        body.vector(1)  # session id
        body.vector(2)  # cipher suites
        body.vector(1)  # compression methods
        extensions = body.vector(2)
        if not body.done():
            return None
        while not extensions.done():
            ext_type = extensions.number(2)
            data = extensions.vector(2)
            if ext_type != EXT_SERVER_NAME:
                continue
            names = data.vector(2)
            if not data.done():
                return None
            while not names.done():
                name_type = names.number(1)
                name = names.vector(2)
                if name_type == NAME_TYPE_HOST and name.end > name.pos:
                    return name.pos, name.end
            return None
    except _Malformed:
        return None
    return None


def server_name(hello: bytes) -> str | None:
    """The host name a ClientHello handshake message names, lower-cased and without a final
    dot; None if there is none, or it is not ASCII."""
    span = server_name_span(hello)
    if span is None:
        return None
    try:
        name = hello[span[0] : span[1]].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name.lower().rstrip(".") or None


@dataclass(frozen=True)
class HelloRead:
    """What the first bytes of a TLS stream hold, read by `read_client_hello`.

    state       incomplete   more bytes may make a ClientHello: read on
                complete     `message` is the whole ClientHello handshake message
                not-tls      the bytes do not start with a TLS handshake record
                malformed    handshake records, but not one ClientHello alone
                too-large    the ClientHello says it is longer than the limit
    used        how many bytes of the input the records of a complete ClientHello take
    """

    state: str
    message: bytes = b""
    used: int = 0


INCOMPLETE = HelloRead("incomplete")


def read_client_hello(data: bytes, limit: int = MAX_RECORD) -> HelloRead:
    """Reassemble the ClientHello at the start of `data` from its handshake records (RFC 8446
    §5.1 lets a handshake message span records; a client may also send it cut small, as
    `tlsfrag` does). The message may be at most `limit` bytes; its records together take at
    most 6 x limit bytes (a 5-byte header per fragment of at least one byte). Nothing after
    the records of the ClientHello is looked at. Never raises."""
    fragments: list[bytes] = []
    size = 0  # handshake bytes gathered
    pos = 0
    total: int | None = None  # the message's length with its 4-byte header, once known
    while total is None or size < total:
        header = data[pos : pos + RECORD_HEADER]
        if header[:1] and header[0] != CONTENT_HANDSHAKE:
            return HelloRead("not-tls" if pos == 0 else "malformed")
        if len(header) > 1 and header[1] != 0x03:
            return HelloRead("not-tls" if pos == 0 else "malformed")
        if len(header) < RECORD_HEADER:
            return INCOMPLETE
        length = int.from_bytes(header[3:5], "big")
        if not 0 < length <= MAX_RECORD:
            return HelloRead("malformed")  # RFC 8446 §5.1: no empty handshake fragments
        end = pos + RECORD_HEADER + length
        if len(data) < end:
            if total is None and size == 0 and length >= 4 and len(data) >= pos + 9:
                # The message's own header is already here: refuse an oversized one early.
                declared = 4 + int.from_bytes(data[pos + 6 : pos + 9], "big")
                if data[pos + 5] == CLIENT_HELLO and declared > limit:
                    return HelloRead("too-large")
            return INCOMPLETE
        fragments.append(data[pos + RECORD_HEADER : end])
        size += length
        pos = end
        if total is None and size >= 4:
            joined = b"".join(fragments)
            if joined[0] != CLIENT_HELLO:
                return HelloRead("malformed")
            total = 4 + int.from_bytes(joined[1:4], "big")
            if total > limit:
                return HelloRead("too-large")
    if size != total:
        return HelloRead("malformed")  # another message shares the ClientHello's last record
    return HelloRead("complete", b"".join(fragments), pos)


def fragment_client_hello(data: bytes, how: Fragmenting) -> list[bytes] | None:
    """What to send for the first bytes of a stream.

    None: the first TLS record is not complete yet (send nothing, wait for more). Otherwise
    the chunks to write: the ClientHello split into records followed by whatever came after
    the record, or `[data]` unchanged when the bytes are not a ClientHello to split. Joining
    the records' fragments gives the original handshake message exactly.
    """
    if not data:
        return None
    header = data[:RECORD_HEADER]
    if header[0] != CONTENT_HANDSHAKE or (len(header) > 1 and header[1] != 0x03):
        return [data]  # not TLS: no reason to wait for more
    if len(header) < RECORD_HEADER:
        return None
    length = int.from_bytes(header[3:5], "big")
    if not 0 < length <= MAX_RECORD:
        return [data]
    end = RECORD_HEADER + length
    if len(data) < end:
        return None
    hello = data[RECORD_HEADER:end]
    if hello[0] != CLIENT_HELLO:
        return [data]
    cuts = how.cuts(hello)
    if not cuts:
        return [data]
    records = [
        header[:3] + (b - a).to_bytes(2, "big") + hello[a:b]
        for a, b in pairwise((0, *cuts, len(hello)))
    ]
    rest = data[end:]
    return [*records, rest] if rest else records


# --- the stream and the dialer ------------------------------------------------------------


class TlsFragStream(WrappedStream):
    """Rewrites the first TLS record written through it; everything else passes unchanged."""

    def __init__(self, inner: Stream, how: Fragmenting) -> None:
        super().__init__(inner)
        self.how = how
        self._held: bytearray | None = bytearray()  # None once the first record is out

    def shaping(self) -> bool:
        return self._held is not None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self.inner.write(data)
            return
        self._held += data
        chunks = fragment_client_hello(bytes(self._held), self.how)
        if chunks is None:
            return  # at most one record (16 KiB) is ever held
        self._held = None
        if self.how.segments:
            # Each record in its own send(): with TCP_NODELAY on an idle new connection,
            # that is its own TCP segment.
            for chunk in chunks:
                self.inner.write(chunk)
        else:
            self.inner.write(b"".join(chunks))

    def _release(self) -> None:
        """Send what is held unchanged: the writer will not complete the record."""
        held, self._held = self._held, None
        if held:
            self.inner.write(bytes(held))

    def write_eof(self) -> None:
        self._release()
        self.inner.write_eof()

    def close(self) -> None:
        self._release()
        self.inner.close()

    def abort(self) -> None:
        self._held = None
        self.inner.abort()


class TlsFragDialer:
    """Dial with `inner`, then fragment the ClientHello written on the stream."""

    def __init__(self, inner: Dialer, how: Fragmenting) -> None:
        if not how.offsets and not how.sni:
            raise ValueError("tlsfrag needs a cut point: an offset or the server name")
        if any(offset < 1 for offset in how.offsets):
            raise ValueError("tlsfrag offsets count from 1")
        self.inner = inner
        self.how = how

    async def dial(self, target: Endpoint) -> Stream:
        stream = await self.inner.dial(target)
        if self.how.segments:
            set_no_delay(stream)
        return TlsFragStream(stream, self.how)

    def __repr__(self) -> str:
        return f"TlsFragDialer({self.inner!r}, {self.how})"
