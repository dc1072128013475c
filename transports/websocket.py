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
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any

from .base import DialError, Failure, Op, Stream

__all__ = [
    "Frame",
    "NeedMore",
    "WebSocketError",
    "WebSocketStream",
    "encode_frame",
    "parse_frame",
    "websocket_connect",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
MAX_FRAME = 1 << 20
MAX_HEAD = 16 * 1024
CHUNK = 64 * 1024  # a write larger than this goes out as several messages

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPS = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


class WebSocketError(ConnectionError):
    """The peer broke the WebSocket protocol."""


class NeedMore(Exception):
    """The bytes given end inside a frame."""


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def parse_frame(buf: bytes | bytearray, *, expect_masked: bool = False) -> tuple[int, Frame]:
    """(bytes consumed, frame) from the start of `buf`; raises NeedMore or WebSocketError."""
    if len(buf) < 2:
        raise NeedMore
    first, second = buf[0], buf[1]
    fin, rsv, opcode = bool(first & 0x80), first & 0x70, first & 0x0F
    masked, length = bool(second & 0x80), second & 0x7F
    if rsv:
        raise WebSocketError("reserved bits set (no extension was negotiated)")
    if opcode not in _DATA_OPS + _CONTROL_OPS:
        raise WebSocketError(f"unknown opcode {opcode:#x}")
    if masked != expect_masked:
        raise WebSocketError("masked frame from the server" if masked else "unmasked frame")
    pos = 2
    if length == 126:
        if len(buf) < 4:
            raise NeedMore
        (length,) = struct.unpack_from("!H", buf, 2)
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            raise NeedMore
        (length,) = struct.unpack_from("!Q", buf, 2)
        pos = 10
    if opcode in _CONTROL_OPS and (length > 125 or not fin):
        raise WebSocketError("control frames are short and unfragmented")
    if length > MAX_FRAME:
        raise WebSocketError(f"frame of {length} bytes (at most {MAX_FRAME})")
    mask = b""
    if masked:
        if len(buf) < pos + 4:
            raise NeedMore
        mask = bytes(buf[pos : pos + 4])
        pos += 4
    if len(buf) < pos + length:
        raise NeedMore
    payload = bytes(buf[pos : pos + length])
    if mask:
        payload = _apply_mask(payload, mask)
    return pos + length, Frame(fin, opcode, payload)


def _apply_mask_python(data: bytes | bytearray, mask: bytes) -> bytes:
    # XOR with the 4-byte key repeated; int arithmetic keeps this fast for large payloads.
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


try:  # aiohttp's compiled masking (used by its own WebSocket code), ~10x the Python one
    from aiohttp._websocket.helpers import websocket_mask as _mask_in_place
except ImportError:  # pragma: no cover - another aiohttp layout; the Python version is correct
    _mask_in_place = None


def _apply_mask(data: bytes | bytearray, mask: bytes) -> bytes:
    if _mask_in_place is None:
        return _apply_mask_python(data, mask)
    buf = bytearray(data)
    _mask_in_place(mask, buf)
    return bytes(buf)


def encode_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
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
        return head + payload
    key = os.urandom(4)
    return head + key + _apply_mask(payload, key)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class WebSocketStream(Stream):
    """A byte stream over a WebSocket's binary messages (client side)."""

    def __init__(self, inner: Stream) -> None:
        self.inner = inner
        self._buffer = bytearray()  # received frame bytes not yet parsed
        self._pending = bytearray()  # message bytes not yet read
        self._fragments: list[bytes] = []
        self._eof = False
        self._closing = False

    async def read(self, n: int = 65536) -> bytes:
        while not self._pending:
            if self._eof:
                return b""
            await self._receive()
        data = bytes(self._pending[:n])
        del self._pending[:n]
        return data

    async def _receive(self) -> None:
        while True:
            try:
                used, frame = parse_frame(self._buffer)
            except NeedMore:
                chunk = await self.inner.read(65536)
                if not chunk:
                    if self._buffer:
                        raise WebSocketError("the connection ended inside a frame") from None
                    self._eof = True  # ended without a close frame: still an end
                    return
                self._buffer += chunk
                continue
            del self._buffer[:used]
            if frame.opcode == OP_PING:
                self.inner.write(encode_frame(OP_PONG, frame.payload))
                continue
            if frame.opcode == OP_PONG:
                continue
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
            self._fragments.append(frame.payload)
            if sum(len(f) for f in self._fragments) > MAX_FRAME:
                raise WebSocketError("message too large")
            if frame.fin:
                self._pending += b"".join(self._fragments)
                self._fragments.clear()
                if self._pending:
                    return

    def unread(self, data: bytes) -> None:
        if data:
            self._pending[:0] = data

    def write(self, data: bytes) -> None:
        if self._closing:
            raise ConnectionResetError("the WebSocket is closing")
        for start in range(0, len(data), CHUNK):
            self.inner.write(encode_frame(OP_BINARY, data[start : start + CHUNK]))

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
) -> WebSocketStream:
    """Run the opening handshake over `stream` (RFC 6455 §4.1); returns the WebSocketStream.

    Raises DialError(proxy_refused, proxy_handshake) when the server answers with anything
    but a switch to this WebSocket (a relay's decoy site answers 404 or 200)."""
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
        raise DialError(
            Failure.PROXY_REFUSED,
            Op.PROXY_HANDSHAKE,
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
    return WebSocketStream(stream)
