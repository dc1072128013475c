"""WebSocket (RFC 6455), both ends, over any detour Stream: the opening handshake and the
framing, so a WebSocket can run over TLS to a CDN front, over a SOCKS tunnel, or over
anything else a chain provides. Binary messages carry the bytes of a WebSocketStream.

    frame  +-+-+-+-+-------+-+-------------+-------------------------------+
           |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
           |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
           |N|V|V|V|       |S|             |   (if payload len==126/127)   |
           | |1|2|3|       |K|             |                               |
           +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
           |     Masking-key (32 bits, client to server frames only)      |
           +---------------------------------------------------------------+
           |                     Payload Data ...                          |

The client side (`websocket_connect`) is the fronted transport's tunnel to a relay and any
other WebSocket detour opens; the server side (`accept_headers`, then
`WebSocketStream(..., client=False)`) is the relay's. The two differ only in who masks
(§5.1: a client masks every frame it sends, a server none) and in who sends the upgrade.
Either end answers a ping with a pong and a close frame with a close frame (§5.5.1).

The frame parser is sans-IO (bytes in, frames or NeedMore out) and never trusts a length:
a frame larger than MAX_FRAME, reserved bits, an unknown opcode, or a frame masked the wrong
way for its direction is a protocol error.

Masking runs in C: aiohttp's compiled loop when it is installed and computes the right
thing (checked once, on a test vector), else byte translation tables.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .base import DialError, Failure, Op, Stream
from .deadlines import patient
from .wire import NeedMore, ProtocolError, RequestHead, parse_response_head

__all__ = [
    "Frame",
    "NeedMore",
    "UpgradeRefused",
    "WebSocketError",
    "WebSocketStream",
    "accept_headers",
    "encode_frame",
    "encode_masked_into",
    "masked_head_size",
    "parse_frame",
    "parse_head",
    "seal_masked",
    "websocket_connect",
]

log = logging.getLogger("detour.transports.websocket")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_FRAME = 1 << 20
MAX_HEAD = 16 * 1024
# A write larger than this goes out as several messages. Each message costs a frame head,
# a masking pass and a write to the stream below, so fewer, larger ones are cheaper. Above
# what a TlsStream writes at a time (256 KiB of plaintext plus record overhead), so one of
# its writes is one message, never a large one and a small remainder. Both ends take
# messages of up to MAX_FRAME.
CHUNK = 512 * 1024
# Asked of the stream below at a time: at least a whole message in one read.
READ_SIZE = 512 * 1024
# What `partial_reads` asks of the stream below at least, however small the caller's read.
PARTIAL_READ_MIN = 16 * 1024
# Frames from this size on are built in the stream's reused buffer (encode_masked_into).
SCRATCH_MIN = 4096

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPS = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


class WebSocketError(ConnectionError):
    """The peer broke the WebSocket protocol."""


class UpgradeRefused(DialError):
    """The server answered the upgrade with another HTTP status (`status`; 0: not HTTP)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, detail)
        self.status = status


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes | bytearray  # a bytearray when unmasked here (the server side)


def parse_frame(
    buf: bytes | bytearray,
    *,
    expect_masked: bool = False,
    start: int = 0,
    max_frame: int = MAX_FRAME,
) -> tuple[int, Frame]:
    """(bytes consumed, frame) from `buf[start:]`; raises NeedMore or WebSocketError.

    `expect_masked`: True on the server side (frames from a client are masked), False on
    the client side. `start` lets a reader walk a buffer of several frames without slicing
    it (a copy)."""
    pos, fin, opcode, mask, length = parse_head(
        buf, expect_masked=expect_masked, start=start, max_frame=max_frame
    )
    if len(buf) < pos + length:
        raise NeedMore
    with memoryview(buf) as view:
        if mask:
            payload = _apply_mask(view[pos : pos + length], mask)
        else:
            payload = bytes(view[pos : pos + length])  # one copy, not a slice and a copy
    return pos + length - start, Frame(fin, opcode, payload)


def parse_head(
    buf: bytes | bytearray | memoryview,
    *,
    expect_masked: bool = False,
    start: int = 0,
    max_frame: int = MAX_FRAME,
) -> tuple[int, bool, int, bytes, int]:
    """A frame's head at `buf[start:]`: (where its payload starts in `buf`, fin, opcode,
    masking key or b"", payload length); raises NeedMore or WebSocketError as parse_frame
    does. The payload need not have arrived."""
    end = len(buf)
    if end < start + 2:
        raise NeedMore
    first, second = buf[start], buf[start + 1]
    fin, rsv, opcode = bool(first & 0x80), first & 0x70, first & 0x0F
    masked, length = bool(second & 0x80), second & 0x7F
    if rsv:
        raise WebSocketError("reserved bits set (no extension was negotiated)")
    if opcode not in _DATA_OPS + _CONTROL_OPS:
        raise WebSocketError(f"unknown opcode {opcode:#x}")
    if masked != expect_masked:
        raise WebSocketError("masked frame from the server" if masked else "unmasked frame")
    pos = start + 2
    if length == 126:
        if end < pos + 2:
            raise NeedMore
        (length,) = struct.unpack_from("!H", buf, pos)
        pos += 2
    elif length == 127:
        if end < pos + 8:
            raise NeedMore
        (length,) = struct.unpack_from("!Q", buf, pos)
        pos += 8
    if opcode in _CONTROL_OPS and (length > 125 or not fin):
        raise WebSocketError("control frames are short and unfragmented")
    if length > max_frame:
        raise WebSocketError(f"frame of {length} bytes (at most {max_frame})")
    mask = b""
    if masked:
        if end < pos + 4:
            raise NeedMore
        mask = bytes(buf[pos : pos + 4])
        pos += 4
    return pos, fin, opcode, mask, length


# --- masking --------------------------------------------------------------------------------

MaskInPlace = Callable[[bytes, bytearray], None]


def _apply_mask_python(data: bytes | bytearray, mask: bytes) -> bytes:
    """XOR with the 4-byte key repeated, in C loops: each fourth byte through a translation
    table (about 1 GiB/s; the compiled loop below does tens)."""
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_xor_table(mask[i]))
    return bytes(out)


@functools.cache
def _xor_table(key: int) -> bytes:
    """Byte b -> b XOR key; made when first used (only without the compiled loop)."""
    return bytes(b ^ key for b in range(256))


def _compiled_mask() -> tuple[MaskInPlace | None, str]:
    """aiohttp's compiled masking loop (what its own WebSockets use), loaded by itself, and
    a word on where it came from or why there is none.

    It is `_websocket_mask_cython(mask: bytes, data: bytearray)` in the extension module
    `aiohttp/_websocket/mask`, the layout since aiohttp 3.11 (pyproject's floor). Importing
    it the ordinary way runs aiohttp/__init__, which loads aiohttp's whole HTTP client:
    about 14 MB resident in every detour with a `front:` route, for one loop. The extension
    stands alone (its init imports nothing of aiohttp), so it is loaded from its file under
    its own name; if aiohttp is imported later, it finds it already loaded. Any failure here
    means the Python loop, never an error."""
    name = "aiohttp._websocket.mask"
    symbol = "_websocket_mask_cython"
    if name in sys.modules:
        return getattr(sys.modules[name], symbol, None), "aiohttp's, already loaded"
    try:
        package = importlib.util.find_spec("aiohttp")
    except (ImportError, ValueError):
        return None, "aiohttp is not installed"
    for root in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(root, "_websocket", "mask" + suffix)
            if not os.path.exists(path):
                continue
            try:
                loader = importlib.machinery.ExtensionFileLoader(name, path)
                spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                if spec is None:
                    return None, f"{path} is no extension module"
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
            except Exception as exc:  # any failure of a foreign binary: the Python loop
                return None, f"{path} did not load ({type(exc).__name__}: {exc})"
            sys.modules[name] = module
            return getattr(module, symbol, None), path
    return None, "aiohttp has no compiled WebSocket mask (a build without extensions)"


def _select_mask(candidate: MaskInPlace | None, origin: str) -> MaskInPlace | None:
    """`candidate` if it masks a test vector right, else None (the Python loop); logs which
    path is active. The vector's length exercises a loop's 8-byte, 4-byte and 1-byte steps,
    and the key has four different bytes, so a rotated or byte-swapped key shows too."""
    if candidate is None:
        log.debug("WebSocket masking: the Python loop (%s)", origin)
        return None
    key = b"\x12\x34\x56\x78"
    vector = bytes(range(7, 7 + 8 * 3 + 4 + 3))
    expected = _apply_mask_python(vector, key)
    try:
        buf = bytearray(vector)
        candidate(key, buf)
        right = bytes(buf) == expected
        problem = "a wrong result on its test vector"
    except Exception as exc:
        right = False
        problem = f"{type(exc).__name__} on its test vector: {exc}"
    if not right:
        log.debug("WebSocket masking: the Python loop (the compiled one gave %s)", problem)
        return None
    log.debug("WebSocket masking: the compiled loop (%s)", origin)
    return candidate


_mask_in_place = _select_mask(*_compiled_mask())


def _apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes | bytearray:
    """`data` masked, in a new buffer. With the compiled loop that buffer is the bytearray it
    masked in place: converting it to bytes would cost another buffer of its size, and a
    large new buffer costs page faults (a received frame is up to 512 KiB)."""
    if _mask_in_place is None:
        return _apply_mask_python(bytes(data), mask)
    buf = bytearray(data)
    _mask_in_place(mask, buf)
    return buf


def _head(opcode: int, length: int, mask: bool, fin: bool) -> bytes:
    """A frame's first bytes, up to its masking key."""
    first = (0x80 if fin else 0) | opcode
    flag = 0x80 if mask else 0
    if length < 126:
        return bytes((first, flag | length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, flag | 126, length)
    return struct.pack("!BBQ", first, flag | 127, length)


def encode_frame(
    opcode: int, payload: bytes | bytearray | memoryview, *, mask: bool = True, fin: bool = True
) -> bytes | bytearray:
    """One frame; `mask`: True from a client, False from a server."""
    length = len(payload)
    head = _head(opcode, length, mask, fin)
    if not mask:
        return b"".join((head, payload))
    key = os.urandom(4)
    if _mask_in_place is None:
        return head + key + _apply_mask(payload, key)
    # The whole frame in one buffer with one copy of the payload, masked in place. The
    # masking helper starts at the buffer's first byte, so it gets the key rotated to line
    # up with the payload's start; the head it garbles on the way is written back after.
    start = len(head) + 4
    frame = bytearray(head + key)
    frame += payload
    shift = start % 4
    _mask_in_place(key[-shift:] + key[:-shift] if shift else key, frame)
    frame[:start] = head + key
    return frame


def encode_masked_into(
    buf: bytearray, opcode: int, parts: Iterable[bytes | bytearray | memoryview], length: int
) -> bytearray:
    """One masked frame (a client's) whose payload is `parts` joined (`length` bytes in all),
    written into `buf`, which is resized to the frame and returned: a writer that hands its
    frames to a stream that copies them at once (TLS encrypts them) reuses one buffer, so
    a large frame costs one copy of its payload into warm memory and one masking pass --
    no join of the parts, no new buffer (and its page faults) per frame."""
    start = masked_head_size(length)
    size = start + length
    if len(buf) != size:
        if len(buf) > size:
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))
    at = start
    with memoryview(buf) as view:
        for part in parts:
            end = at + len(part)
            view[at:end] = part
            at = end
    if at != size:
        raise ValueError(f"the parts hold {at - start} bytes, not {length}")
    return seal_masked(buf, opcode)


def masked_head_size(length: int) -> int:
    """The bytes in front of a client frame's payload of `length` bytes: its head and its
    masking key."""
    return (2 if length < 126 else 4 if length < 1 << 16 else 10) + 4


def seal_masked(buf: bytearray, opcode: int) -> bytearray:
    """Make `buf` one masked frame (a client's, final) in place: `buf` holds room for the
    head and key (masked_head_size of the payload's length) and then the payload, nothing
    else. The payload is masked with a new key and the head and key written in front;
    returns `buf`."""
    length = len(buf) - 6
    if length >= 126:
        length -= 2
        if length >= 1 << 16:
            length -= 6
    start = len(buf) - length
    if length < 0 or masked_head_size(length) != start:
        raise ValueError(f"a buffer of {len(buf)} bytes holds no masked frame")
    head = _head(opcode, length, True, True)
    key = os.urandom(4)
    if _mask_in_place is None:
        buf[start:] = _apply_mask_python(bytes(buf[start:]), key)
    else:
        # The masking helper starts at the buffer's first byte, so it gets the key rotated
        # to line up with the payload's start; the head it garbles is written after.
        shift = start % 4
        _mask_in_place(key[-shift:] + key[:-shift] if shift else key, buf)
    buf[:start] = head + key
    return buf


# --- the stream -----------------------------------------------------------------------------


class WebSocketStream(Stream):
    """A byte stream over a WebSocket's binary messages, at either end (`client`: which
    masks). `subprotocol` is the one the handshake agreed on, if any; `max_frame` bounds
    what the peer may send in one frame (and one message).

    Each write is one message (several above CHUNK; `write_message` sends one of any size);
    each read returns at most one message's bytes, a whole message as it came when it fits.
    Pings are answered, pongs ignored; a close frame from the peer is answered and ends the
    stream. A text message is an error: this stream carries bytes."""

    def __init__(
        self,
        inner: Stream,
        *,
        client: bool = True,
        subprotocol: str | None = None,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.inner = inner
        self.client = client
        self.subprotocol = subprotocol
        self.max_frame = max_frame
        self.answer_size = 0  # the client's: the bytes of the server's 101 answer head
        self._buffer = bytearray()  # received frame bytes not yet parsed
        self._ready: deque[bytes] = deque()  # message bytes not yet read, in order
        self._fragments: list[bytes] = []
        self._eof = False
        self._closing = False
        # Hand a data frame's payload out as it arrives, not once the whole message is in
        # (set before the first read; see `read`). `_left`: the payload of the frame being
        # handed out that has not arrived yet; `_in_message`: inside a fragmented message.
        self.partial_reads = False
        self._left = 0
        self._in_message = False
        # One buffer for every large frame, when this end masks and the stream below copies
        # each write before returning (TLS encrypts it): encode_masked_into.
        self._scratch: bytearray | None = (
            bytearray() if client and getattr(inner, "copies_writes", False) else None
        )

    def __repr__(self) -> str:
        return f"WebSocketStream({'client' if self.client else 'server'})"

    async def read(self, n: int = 65536) -> bytes:
        """At most `n` bytes of one message. With `partial_reads` (for a caller that wants a
        byte stream and no message boundaries: tgws), a large message's payload is handed
        on piece by piece as it arrives -- a piece the stream below delivered whole (the
        middle of a large frame) without any copy -- and the stream below is asked for `n`
        at a time, so a caller's read size flows down to TLS."""
        while not self._ready:
            if self._eof:
                return b""
            if self.partial_reads:
                await self._receive_partial(n)
            else:
                await self._receive()
        # Whole messages are handed on as they are (no copy) when they fit.
        data = self._ready[0]
        if len(data) <= n:
            self._ready.popleft()
            return bytes(data) if type(data) is memoryview else data
        # The rest stays a view: only what is returned now is copied.
        view = data if type(data) is memoryview else memoryview(data)
        self._ready[0] = view[n:]
        return bytes(view[:n])

    async def _receive_partial(self, n: int) -> None:
        """_receive for `partial_reads` (client side: the peer's frames are not masked).
        Returns once some payload bytes are ready or the stream has ended."""
        while True:
            chunk = await self.inner.read(max(n, PARTIAL_READ_MIN))
            if not chunk:
                if self._buffer or self._left:
                    raise WebSocketError("the connection ended inside a frame") from None
                self._eof = True
                return
            if not self._buffer and len(chunk) <= self._left:
                self._left -= len(chunk)  # the middle of a frame's payload: as it came
                self._ready.append(chunk)
                return
            data: bytes | bytearray = self._buffer + chunk if self._buffer else chunk
            self._buffer = bytearray()
            view = memoryview(data)
            end = len(data)
            start = min(self._left, end)
            if start:
                self._ready.append(bytes(view[:start]))
                self._left -= start
            try:
                while start < end and not self._eof:
                    pos, fin, opcode, mask, length = parse_head(
                        data, expect_masked=not self.client, start=start, max_frame=self.max_frame
                    )
                    if opcode in _CONTROL_OPS or mask:
                        used, frame = parse_frame(
                            data,
                            start=start,
                            expect_masked=not self.client,
                            max_frame=self.max_frame,
                        )
                        start += used
                        self._take(frame)
                        continue
                    self._begin_data(fin, opcode)
                    here = min(length, end - pos)
                    if here:
                        self._ready.append(bytes(view[pos : pos + here]))
                    self._left = length - here
                    start = pos + here
            except NeedMore:
                self._buffer = bytearray(view[start:])
            if self._ready or self._eof:
                return

    def _begin_data(self, fin: bool, opcode: int) -> None:
        """The checks _take makes of a data frame, for one handed out as it arrives."""
        if opcode == OP_TEXT:
            raise WebSocketError("a text message where bytes were expected")
        if opcode == OP_CONTINUATION and not self._in_message and not fin:
            raise WebSocketError("a continuation frame with nothing to continue")
        self._in_message = not fin

    async def _receive(self) -> None:
        """Parse every complete frame received; read more only when none is complete.
        Returns once some message bytes are ready or the stream has ended.

        A read usually holds whole frames (the peer writes one per message): they are parsed
        where they lie, and only the start of a frame that continues in the next read is
        kept in the buffer (each copy of a large buffer costs its size in page faults)."""
        while True:
            chunk = await self.inner.read(READ_SIZE)
            if not chunk:
                if self._buffer:
                    raise WebSocketError("the connection ended inside a frame") from None
                self._eof = True  # ended without a close frame: still an end
                return
            if self._buffer:
                self._buffer += chunk
                data: bytes | bytearray = self._buffer
            else:
                data = chunk
            start = 0
            try:
                while True:
                    used, frame = parse_frame(
                        data, start=start, expect_masked=not self.client, max_frame=self.max_frame
                    )
                    start += used
                    self._take(frame)
                    if self._eof:
                        break
            except NeedMore:
                pass
            if data is self._buffer:
                del self._buffer[:start]  # once per batch of frames, not once per frame
            elif start < len(data):
                self._buffer = bytearray(memoryview(data)[start:])
            if self._ready or self._eof:
                return

    def _send(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        if self._scratch is not None and len(payload) >= SCRATCH_MIN:
            self._send_parts(opcode, (payload,), len(payload))
        else:
            self.inner.write(encode_frame(opcode, payload, mask=self.client))

    def _send_parts(
        self, opcode: int, parts: Iterable[bytes | bytearray | memoryview], length: int
    ) -> None:
        scratch = self._scratch
        if scratch is None:
            self.inner.write(encode_frame(opcode, b"".join(parts), mask=self.client))
            return
        try:
            frame = encode_masked_into(scratch, opcode, parts, length)
        except BufferError:  # still exported (a view of the last frame kept below): anew
            self._scratch = scratch = bytearray()
            frame = encode_masked_into(scratch, opcode, parts, length)
        self.inner.write(frame)

    def _take(self, frame: Frame) -> None:
        if frame.opcode == OP_PING:
            if not self._closing:  # nothing may follow our close frame (§5.5.1)
                self._send(OP_PONG, frame.payload)
            return
        if frame.opcode == OP_PONG:
            return
        if frame.opcode == OP_CLOSE:
            if not self._closing:
                self._closing = True
                self._send(OP_CLOSE, frame.payload[:2])
            self._eof = True
            return
        if frame.opcode == OP_TEXT:
            raise WebSocketError("a text message where bytes were expected")
        if frame.opcode == OP_CONTINUATION and not self._fragments and not frame.fin:
            raise WebSocketError("a continuation frame with nothing to continue")
        if frame.fin and not self._fragments:
            if frame.payload:
                self._ready.append(frame.payload)
            return
        self._fragments.append(frame.payload)
        if sum(len(f) for f in self._fragments) > self.max_frame:
            raise WebSocketError("message too large")
        if frame.fin:
            message = b"".join(self._fragments)
            self._fragments.clear()
            if message:
                self._ready.append(message)

    def unread(self, data: bytes) -> None:
        if data:
            self._ready.appendleft(bytes(data))

    def write(self, data: bytes) -> None:
        if self._closing:
            raise ConnectionResetError("the WebSocket is closing")
        if len(data) <= CHUNK:
            self._send(OP_BINARY, data)
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            self._send(OP_BINARY, view[start : start + CHUNK])

    def write_message(self, data: bytes | bytearray | memoryview) -> None:
        """`data` as one binary message, whatever its size (for peers that read each
        message as a unit; `write` cuts large writes into several)."""
        if self._closing:
            raise ConnectionResetError("the WebSocket is closing")
        self._send(OP_BINARY, data)

    def write_message_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """`parts` joined, as one binary message (the pieces of a packet that spanned
        several reads: copied once, into the frame)."""
        if self._closing:
            raise ConnectionResetError("the WebSocket is closing")
        if len(parts) == 1:
            self._send(OP_BINARY, parts[0])
            return
        self._send_parts(OP_BINARY, parts, sum(len(p) for p in parts))

    def close_write(self, code: int = 1000) -> None:
        """Start the closing handshake and keep reading: the peer may send what it has left
        before its own Close frame, which ends reading (a half-close, for peers that treat
        Close so; RFC 6455 §5.5.1 lets a peer finish the message it is sending)."""
        if not self._closing:
            self._closing = True
            self._send(OP_CLOSE, struct.pack("!H", code))

    async def drain(self) -> None:
        await self.inner.drain()

    def can_write_eof(self) -> bool:
        return False  # a WebSocket has no half-close; the layer above (TLS 1.3) brings its own

    def write_eof(self) -> None:
        raise NotImplementedError("WebSockets cannot half-close")

    def close(self) -> None:
        """Send a close frame (1000, normal closure) and close the stream below: what was
        written before goes out first."""
        if not self._closing and not self.inner.is_closing():
            self._closing = True
            try:
                self._send(OP_CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass  # best effort: the peer is gone (a TLS layer below raises SSLEOFError)
        self.inner.close()

    def abort(self) -> None:
        self._closing = True
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    def is_closing(self) -> bool:
        return self._closing or self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)


# --- the opening handshake ------------------------------------------------------------------


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def _protocol_list(values: Iterable[str]) -> list[str]:
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


def accept_headers(
    request: RequestHead, protocols: Iterable[str] = ()
) -> tuple[list[tuple[str, str]], str | None]:
    """The server's half of the opening handshake (§4.2): for a valid upgrade request, the
    101 answer's header fields and the subprotocol chosen (the first of the client's that is
    in `protocols`, or None). Raises ProtocolError saying what is wrong otherwise; a server
    that must not give itself away answers that as any other request it does not serve.
    Extensions are never agreed (the client then sends none)."""
    if request.method != "GET" or request.version != "HTTP/1.1":
        raise ProtocolError("a WebSocket upgrade is a GET in HTTP/1.1")
    if "websocket" not in request.tokens("upgrade"):
        raise ProtocolError("no Upgrade: websocket")
    if "upgrade" not in request.tokens("connection"):
        raise ProtocolError("no Connection: upgrade")
    if request.header("sec-websocket-version") != "13":
        raise ProtocolError("not WebSocket version 13")
    key = request.header("sec-websocket-key") or ""
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid or request.header_count("sec-websocket-key") != 1:
        raise ProtocolError("no valid Sec-WebSocket-Key")
    offered = _protocol_list(v for k, v in request.headers if k.lower() == "sec-websocket-protocol")
    ours = set(protocols)
    chosen = next((p for p in offered if p in ours), None)
    headers = [
        ("Connection", "upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if chosen is not None:
        headers.append(("Sec-WebSocket-Protocol", chosen))
    return headers, chosen


async def websocket_connect(
    stream: Stream,
    host: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    protocols: Iterable[str] = (),
    timeout: float = 10.0,
    max_frame: int = MAX_FRAME,
    first_message: bytes | None = None,
) -> WebSocketStream:
    """Run the client's opening handshake over `stream` (§4.1); returns the WebSocketStream.

    `headers` go into the upgrade request as given (User-Agent, Origin, Cookie, ...).
    `protocols` are offered as Sec-WebSocket-Protocol (a `Sec-WebSocket-Protocol` in
    `headers` counts as offered too); the server may choose one (`stream.subprotocol`), and
    choosing one that was not offered fails the handshake.

    Raises UpgradeRefused, a DialError(proxy_refused, proxy_handshake), when the server
    answers with anything but a switch to this WebSocket (a relay's decoy site answers 404
    or 200).

    `first_message`: a binary message sent right behind the request, before the answer (one
    round trip less; the server must expect it: it is the upgraded connection's first data).
    The answer head's size is the stream's `answer_size`."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = dict(headers or {})
    offer = list(protocols)
    if offer:
        extra["Sec-WebSocket-Protocol"] = ", ".join(offer)
    offered = set(
        _protocol_list(v for k, v in extra.items() if k.lower() == "sec-websocket-protocol")
    )
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in extra.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if first_message is not None:
        request += bytes(encode_frame(OP_BINARY, first_message, mask=True))
    stream.write(request)
    try:
        async with patient(timeout):
            await stream.drain()
            head = await stream.readuntil(b"\r\n\r\n", MAX_HEAD)
    except TimeoutError:
        raise DialError(
            Failure.TIMEOUT,
            Op.PROXY_HANDSHAKE,
            f"no answer to the WebSocket upgrade within {timeout:g}s",
        ) from None
    except asyncio.IncompleteReadError:
        raise DialError(
            Failure.EOF, Op.PROXY_HANDSHAKE, "closed without answering the WebSocket upgrade"
        ) from None
    except asyncio.LimitOverrunError:
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, "the upgrade answer is too long"
        ) from None
    try:
        answer = parse_response_head(head)
    except ProtocolError:
        answer = None
    if answer is None or answer.status != 101:
        status = answer.status if answer else 0
        raise UpgradeRefused(
            status,
            f"the server answered HTTP {status or '(not HTTP)'} instead of a WebSocket "
            "(a wrong path or key gets the relay's ordinary website)",
        )
    chosen = answer.header("sec-websocket-protocol")
    if (
        answer.header("sec-websocket-accept") != accept_key(key)
        or (answer.header("upgrade") or "").lower() != "websocket"
        or (chosen is not None and chosen not in offered)
    ):
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR,
            Op.PROXY_HANDSHAKE,
            "the WebSocket upgrade answer is wrong",
        )
    ws = WebSocketStream(stream, client=True, subprotocol=chosen, max_frame=max_frame)
    ws.answer_size = len(head)
    return ws
