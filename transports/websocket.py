"""WebSocket (RFC 6455), client side, over any detour Stream: the opening handshake and the
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

The frame parser is sans-IO (bytes in, frames or "need more" out) and never trusts a length:
a frame larger than MAX_FRAME, reserved bits, an unknown opcode or a masked frame from the
server is a protocol error.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import DialError, Failure, Op, Stream

__all__ = [
    "Frame",
    "NeedMore",
    "UpgradeRefused",
    "WebSocketError",
    "WebSocketStream",
    "encode_frame",
    "parse_frame",
    "websocket_connect",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_FRAME = 1 << 20
MAX_HEAD = 16 * 1024
# A write larger than this goes out as several messages. Each message costs a frame head,
# a masking pass and a write to the stream below, so fewer, larger ones are cheaper. Above
# what a TlsStream writes at a time (256 KiB of plaintext plus record overhead), so one of
# its writes is one message, never a large one and a small remainder. The relay takes
# messages of up to 4 MiB.
CHUNK = 512 * 1024
# Asked of the stream below at a time: at least a whole message in one read.
READ_SIZE = 512 * 1024

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPS = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


class WebSocketError(ConnectionError):
    """The peer broke the WebSocket protocol."""


class NeedMore(Exception):
    """The bytes given end inside a frame."""


class UpgradeRefused(DialError):
    """The server answered the upgrade with another HTTP status (`status`; 0: not HTTP)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, detail)
        self.status = status


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def parse_frame(
    buf: bytes | bytearray,
    *,
    expect_masked: bool = False,
    start: int = 0,
    max_frame: int = MAX_FRAME,
) -> tuple[int, Frame]:
    """(bytes consumed, frame) from `buf[start:]`; raises NeedMore or WebSocketError.

    `start` lets a reader walk a buffer of several frames without slicing it (a copy)."""
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
    if end < pos + length:
        raise NeedMore
    with memoryview(buf) as view:
        if mask:
            payload = _apply_mask(view[pos : pos + length], mask)
        else:
            payload = bytes(view[pos : pos + length])  # one copy, not a slice and a copy
    return pos + length - start, Frame(fin, opcode, payload)


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


def _compiled_mask() -> Callable[[bytes, bytearray], None] | None:
    """aiohttp's compiled masking loop (what its own WebSockets use), loaded by itself.

    Importing it the ordinary way runs aiohttp/__init__, which loads aiohttp's whole HTTP
    client: about 14 MB resident in every detour with a `front:` route, for one loop. The
    extension stands alone (its init imports nothing of aiohttp), so it is loaded from its
    file under its own name; if aiohttp is imported later, it finds it already loaded."""
    name = "aiohttp._websocket.mask"
    if name in sys.modules:
        return getattr(sys.modules[name], "_websocket_mask_cython", None)
    try:
        package = importlib.util.find_spec("aiohttp")
    except (ImportError, ValueError):  # pragma: no cover - aiohttp is a dependency
        return None
    for root in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(root, "_websocket", "mask" + suffix)
            if not os.path.exists(path):
                continue
            try:
                loader = importlib.machinery.ExtensionFileLoader(name, path)
                spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                assert spec is not None
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
            except (ImportError, OSError, AssertionError):  # pragma: no cover
                return None
            sys.modules[name] = module
            return getattr(module, "_websocket_mask_cython", None)
    return None  # pragma: no cover - aiohttp without its extensions: the Python loop


_mask_in_place = _compiled_mask()


def _apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    if _mask_in_place is None:
        return _apply_mask_python(bytes(data), mask)
    buf = bytearray(data)
    _mask_in_place(mask, buf)
    return bytes(buf)


def encode_frame(
    opcode: int, payload: bytes | bytearray | memoryview, *, mask: bool = True, fin: bool = True
) -> bytes | bytearray:
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    flag = 0x80 if mask else 0
    if length < 126:
        head += bytes([flag | length])
    elif length < 1 << 16:
        head += bytes([flag | 126]) + struct.pack("!H", length)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", length)
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


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class WebSocketStream(Stream):
    """A byte stream over a WebSocket's binary messages (client side).

    `max_frame` bounds what the server may send in one frame (and one message)."""

    def __init__(self, inner: Stream, *, max_frame: int = MAX_FRAME) -> None:
        self.inner = inner
        self.max_frame = max_frame
        self._buffer = bytearray()  # received frame bytes not yet parsed
        self._ready: deque[bytes] = deque()  # message bytes not yet read, in order
        self._fragments: list[bytes] = []
        self._eof = False
        self._closing = False

    async def read(self, n: int = 65536) -> bytes:
        while not self._ready:
            if self._eof:
                return b""
            await self._receive()
        # Whole messages are handed on as they are (no copy) when they fit.
        data = self._ready[0]
        if len(data) <= n:
            self._ready.popleft()
            return data
        self._ready[0] = data[n:]
        return data[:n]

    async def _receive(self) -> None:
        """Parse every complete frame buffered; read more only when none is complete.
        Returns once some message bytes are ready or the stream has ended."""
        while True:
            buf = self._buffer
            start = 0
            try:
                while True:
                    used, frame = parse_frame(buf, start=start, max_frame=self.max_frame)
                    start += used
                    self._take(frame)
                    if self._eof:
                        break
            except NeedMore:
                pass
            finally:
                if start:
                    del buf[:start]  # once per batch of frames, not once per frame
            if self._ready or self._eof:
                return
            chunk = await self.inner.read(READ_SIZE)
            if not chunk:
                if self._buffer:
                    raise WebSocketError("the connection ended inside a frame") from None
                self._eof = True  # ended without a close frame: still an end
                return
            self._buffer += chunk

    def _take(self, frame: Frame) -> None:
        if frame.opcode == OP_PING:
            self.inner.write(encode_frame(OP_PONG, frame.payload))
            return
        if frame.opcode == OP_PONG:
            return
        if frame.opcode == OP_CLOSE:
            if not self._closing:
                self._closing = True
                self.inner.write(encode_frame(OP_CLOSE, frame.payload[:2]))
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
            self.inner.write(encode_frame(OP_BINARY, data))
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            self.inner.write(encode_frame(OP_BINARY, view[start : start + CHUNK]))

    def write_message(self, data: bytes | bytearray | memoryview) -> None:
        """`data` as one binary message, whatever its size (for peers that read each
        message as a unit; `write` cuts large writes into several)."""
        if self._closing:
            raise ConnectionResetError("the WebSocket is closing")
        self.inner.write(encode_frame(OP_BINARY, data))

    def close_write(self, code: int = 1000) -> None:
        """Start the closing handshake and keep reading: the peer may send what it has left
        before its own Close frame, which ends reading (a half-close, for peers that treat
        Close so; RFC 6455 §5.5.1 lets a peer finish the message it is sending)."""
        if not self._closing:
            self._closing = True
            self.inner.write(encode_frame(OP_CLOSE, struct.pack("!H", code)))

    async def drain(self) -> None:
        await self.inner.drain()

    def can_write_eof(self) -> bool:
        return False  # a WebSocket has no half-close; the layer above (TLS 1.3) brings its own

    def write_eof(self) -> None:
        raise NotImplementedError("WebSockets cannot half-close")

    def close(self) -> None:
        if not self._closing and not self.inner.is_closing():
            self._closing = True
            try:
                self.inner.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
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


async def websocket_connect(
    stream: Stream,
    host: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    max_frame: int = MAX_FRAME,
) -> WebSocketStream:
    """Run the opening handshake over `stream` (RFC 6455 §4.1); returns the WebSocketStream.

    Raises UpgradeRefused, a DialError(proxy_refused, proxy_handshake), when the server
    answers with anything but a switch to this WebSocket (a relay's decoy site answers 404
    or 200)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        async with asyncio.timeout(timeout):
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
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    # isascii: '\xb2' (superscript two) is a digit to isdigit() but not to int().
    digits = len(parts) > 1 and parts[1].isascii() and parts[1].isdigit()
    status = int(parts[1]) if digits else 0
    fields = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if status != 101:
        raise UpgradeRefused(
            status,
            f"the server answered HTTP {status or '(not HTTP)'} instead of a WebSocket "
            "(a wrong path or key gets the relay's ordinary website)",
        )
    if (
        fields.get("sec-websocket-accept") != accept_key(key)
        or fields.get("upgrade", "").lower() != "websocket"
    ):
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR,
            Op.PROXY_HANDSHAKE,
            "the WebSocket upgrade answer is wrong",
        )
    return WebSocketStream(stream, max_frame=max_frame)
