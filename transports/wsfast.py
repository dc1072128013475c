"""The relay's fast path for a `tgws` stream on the event loop's TLS: WebSocket frames read
and built around the relay's own buffers, with no task, no await and no new buffer per read.

A `tgws` route whose TLS runs on the loop's transport (transports/tls.py's
tls_connect_fast: the route below is a bare socket) and whose client obfuscates its stream
(Telegram's apps) hands the relay, instead of a stream it must copy with tasks, a wrapper of
that TLS transport it can pipe to the client's socket as it pipes two sockets:

    download  TLS transport --SSL_read--> relay's buffer: frame heads cut out in place,
              control frames taken aside --> the client's socket (no copy in between)
    upload    client's socket --> relay's buffer --> one frame per MTProto packet, built
              in the connection's frame buffer (one copy, masked there) --SSL_write--> TLS

Downward the loop's TLS transport (uvloop's and asyncio's alike) decrypts straight into the
buffer a `BufferedProtocol` gives it: here the relay's. The server's frames are not masked,
so a payload is already what the client reads; only a frame's head (2-10 bytes) lies
between payloads, and the bytes after it are moved over it (a memmove within the buffer,
about once per message). Before, each decrypted record became a bytes object, joined with
the next ones, buffered by the socket stream and handed through three awaits per read.

Upward each packet (the obfuscated stream is cut at its length fields, read with the
keystream as `tgws` does) is copied once, as it arrives, into the connection's frame buffer
behind room for the frame's head, masked there when complete and written; the TLS
transport encrypts it before `write` returns (TLS 1.3: the fast path is taken only then),
so the buffer serves the next packet at once.

`FrameCutter` and `FrameBuilder` are sans-IO (buffers in, buffers out) and unit-tested on
their own; `TgWsPipe` is what `TgWsStream.raw_socket_stream()` returns.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .mtproto.framing import PacketSplitter
from .websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    NeedMore,
    WebSocketError,
    encode_frame,
    masked_head_size,
    parse_head,
    seal_masked,
)

__all__ = ["FrameBuilder", "FrameCutter", "TgWsPipe"]

log = logging.getLogger("detour.transports.tgws")

_LONGEST_HEAD = 14  # 2 + 8 bytes of length + a 4-byte key (a server sends no key)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


class FrameCutter:
    """The payload of a server's WebSocket frames (unmasked: the client's side), cut out of
    a buffer in place. `feed(view, n)`: the first `n` bytes of the writable `view` just
    arrived; the data frames' payload in them is moved to the front of `view` and its size
    returned. Control frames are collected in `controls` ((opcode, payload): the caller
    answers pings and a close); after a close frame nothing more is read (`closed`).
    Raises WebSocketError as the WebSocket stream does (a masked or text frame, an unknown
    opcode, a frame over `max_frame`); the cutter is not to be fed after that."""

    def __init__(self, *, max_frame: int, left: int = 0, in_message: bool = False) -> None:
        self.max_frame = max_frame
        self.left = left  # payload of the current data frame that has not arrived yet
        self._in_message = in_message  # inside a fragmented message
        self._head = b""  # the start of a frame's head that continues in the next feed
        self._control: bytearray | None = None  # a control frame's payload, arriving
        self._control_op = 0
        self._need_control = 0
        self.closed = False
        self.controls: list[tuple[int, bytes]] = []

    @property
    def inside(self) -> bool:
        """In the middle of a frame (an end of the stream here cuts one off)."""
        return bool(self.left or self._head or self._control is not None)

    def feed(self, view: memoryview, n: int) -> int:
        out = pos = 0
        while pos < n and not self.closed:
            left = self.left
            if left:  # the payload of a data frame: moved over the heads before it
                take = min(left, n - pos)
                if out != pos:
                    view[out : out + take] = view[pos : pos + take]
                out += take
                pos += take
                self.left = left - take
                continue
            if self._control is not None:
                take = min(self._need_control - len(self._control), n - pos)
                self._control += view[pos : pos + take]
                pos += take
                if len(self._control) == self._need_control:
                    self._end_control()
                continue
            pos = self._read_head(view, pos, n)
        return out

    def _read_head(self, view: memoryview, pos: int, n: int) -> int:
        """Parse the head at `pos` (with what an earlier feed left of it); returns where
        its payload starts, or `n` when the head continues in the next feed."""
        held = self._head
        if held:
            data: bytes | memoryview = held + bytes(view[pos : min(n, pos + _LONGEST_HEAD)])
            start = 0
        else:
            data, start = view[:n], pos
        try:
            at, fin, opcode, _mask, length = parse_head(
                data, expect_masked=False, start=start, max_frame=self.max_frame
            )
        except NeedMore:
            self._head = bytes(data[start:])
            return n
        if held:
            self._head = b""
            at = pos + at - len(held)  # where the payload starts in `view`
        if opcode in _CONTROL_OPS:
            self._control, self._control_op, self._need_control = bytearray(), opcode, length
            if not length:
                self._end_control()
            return at
        if opcode == OP_TEXT:
            raise WebSocketError("a text message where bytes were expected")
        if opcode == OP_CONTINUATION and not self._in_message and not fin:
            raise WebSocketError("a continuation frame with nothing to continue")
        self._in_message = not fin
        self.left = length
        return at

    def _end_control(self) -> None:
        assert self._control is not None
        self.controls.append((self._control_op, bytes(self._control)))
        if self._control_op == OP_CLOSE:
            self.closed = True
        self._control = None


class FrameBuilder:
    """A client's obfuscated MTProto stream cut into one masked WebSocket frame per
    packet, built in one buffer per connection: `feed(data, write)` copies `data` into the
    frames of the packets it continues or begins, and calls `write(frame)` for each that
    is complete (`write` must take the frame in before it returns: the buffer is reused;
    `frame`, a buffer to start with).
    `splitter` reads the packets' length fields (its keystream at their offsets); `offset`
    is the stream offset of the next packet. Raises FramingError on a length no packet
    can have; the builder is not to be fed after that."""

    def __init__(
        self, splitter: PacketSplitter, offset: int, frame: bytearray | None = None
    ) -> None:
        self.splitter = splitter
        self.offset = offset  # stream offset of the packet being built (or the next)
        self._frame = frame if frame is not None else bytearray()  # (a buffer to reuse)
        self._start = 0  # where the payload begins in the frame (its head's size)
        self._need = 0  # the packet's size; 0: no packet open
        self._have = 0
        self._lead = b""  # a packet's first bytes, until its length field is all there

    @property
    def pending(self) -> int:
        """Bytes of a packet not complete yet."""
        return self._have + len(self._lead)

    def take_pending(self) -> bytes:
        """The incomplete packet's bytes, as they are (the stream is ending)."""
        data = self._lead + bytes(self._frame[self._start : self._start + self._have])
        self.offset += len(data)
        self._lead, self._need, self._have = b"", 0, 0
        return data

    def feed(self, data: bytes | bytearray | memoryview, write: Callable[[bytearray], Any]) -> None:
        view = data if isinstance(data, memoryview) else memoryview(data)
        n = len(view)
        pos = 0
        if self._lead:  # the rest of a length field first
            probe = self._lead + bytes(view[:4])
            size = self.splitter.packet_size(probe, 0, self.offset)
            if size is None:
                self._lead = probe
                return
            self._open(size)
            self._copy(memoryview(self._lead))
            self._lead = b""
        while True:
            if self._need:
                take = min(self._need - self._have, n - pos)
                self._copy(view[pos : pos + take])
                pos += take
                if self._have < self._need:
                    return
                write(seal_masked(self._frame, OP_BINARY))
                self.offset += self._need
                self._need = self._have = 0
            if pos == n:
                return
            size = self.splitter.packet_size(view, pos, self.offset)
            if size is None:
                self._lead = bytes(view[pos:])
                return
            self._open(size)

    def _open(self, size: int) -> None:
        start = masked_head_size(size)
        frame = self._frame
        total = start + size
        try:
            if len(frame) > total:
                del frame[total:]
            elif len(frame) < total:
                frame.extend(bytes(total - len(frame)))
        except BufferError:  # a view of the last frame is still held below: a new one
            self._frame = frame = bytearray(total)
        self._start, self._need, self._have = start, size, 0

    def _copy(self, piece: memoryview) -> None:
        at = self._start + self._have
        self._frame[at : at + len(piece)] = piece
        self._have += len(piece)


@dataclass
class _State:
    """What the relay's fast path reads of a stream's protocol when it takes it over."""

    eof: bool
    lost: bool
    exc: BaseException | None
    writing_paused: bool
    reading_paused: bool


class TgWsPipe:
    """What the relay takes instead of a `tgws` stream for its fast path (`raw_socket_
    stream()`): `detach` returns the TLS transport wrapped (what the relay writes becomes
    frames; what it receives is the frames' payload), the payload already received, and
    the state of the stream's protocol. `stream` is the TgWsStream (transports/tgws.py);
    it must not be used afterwards."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def detach(self) -> tuple[_TgWsTransport, bytes, _State]:
        stream = self.stream
        ws = stream.ws
        transport, unread, proto = ws.inner.detach()
        pending = [bytes(piece) for piece in ws._ready]
        ws._ready.clear()
        cutter = FrameCutter(max_frame=ws.max_frame, left=ws._left, in_message=ws._in_message)
        wrapper = _TgWsTransport(transport, stream, cutter, closing=ws._closing)
        ws._closing = True  # a close() of the old stream sends no close frame of its own
        state = _State(
            eof=proto.eof or ws._eof,
            lost=proto.lost,
            exc=proto.exc,
            writing_paused=proto.writing_paused,
            reading_paused=proto.reading_paused,
        )
        received = bytes(ws._buffer) + unread
        ws._buffer = bytearray()
        if received and not ws._eof:
            buf = bytearray(received)
            try:
                size = cutter.feed(memoryview(buf), len(buf))
            except WebSocketError as exc:
                wrapper.fail(f"the endpoint broke the WebSocket protocol: {exc}")
            else:
                pending.append(bytes(buf[:size]))
                wrapper.answer(cutter)
                state.eof = state.eof or cutter.closed
        if state.eof and not ws._eof and not cutter.closed and cutter.inside:
            wrapper.fail("the endpoint's connection ended inside a WebSocket frame")
        # A failure closes the transport: its connection_lost tells the relay (a reset).
        return wrapper, b"".join(pending), state


class _TgWsTransport:
    """The TLS transport as the relay sees it: writes become frames (FrameBuilder), its
    protocol gets the frames' payload (_TgWsProtocol); a half-close is a close frame.
    Everything else is the transport's own."""

    def __init__(
        self, transport: asyncio.Transport, stream: Any, cutter: FrameCutter, *, closing: bool
    ) -> None:
        self._transport = transport
        self.host = stream.endpoint.host
        self.cutter = cutter
        splitter = stream._splitter
        offset = splitter.offset
        held = splitter.take_pending()  # the start of a packet the stream held
        # The WebSocket's own frame buffer, if it made one, becomes the builder's.
        ws = getattr(stream, "ws", None)
        frame = getattr(ws, "_scratch", None)
        if ws is not None:
            ws._scratch = None
        self.builder = FrameBuilder(splitter, offset, frame)
        self.closing = closing  # our close frame is out: nothing may follow it
        self.error: ConnectionResetError | None = None
        self._protocol: asyncio.BaseProtocol | None = None
        if held:
            self.builder.feed(held, self._write_frame)

    # what the relay writes: the client's bytes, toward Telegram ---------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.error is not None:
            return
        if self.closing:
            self.fail("the client sent more after the WebSocket closed")
            return
        try:
            self.builder.feed(data, self._write_frame)
        except ValueError as exc:  # FramingError
            self.fail(f"the client sent {exc}")

    def _write_frame(self, frame: bytearray) -> None:
        self._transport.write(frame)

    def get_write_buffer_size(self) -> int:
        """What the caller wrote that is still held here: nothing, ever (each write is
        copied into the frame buffer, and TLS encrypts each frame, before it returns)."""
        return 0

    def can_write_eof(self) -> bool:
        return True  # a close frame; reading goes on until the endpoint's

    def write_eof(self) -> None:
        if self.closing or self.error is not None:
            return
        if self.builder.pending:  # a cut-off packet: Telegram decides
            self._send(OP_BINARY, self.builder.take_pending())
        self._close_frame(struct.pack("!H", 1000))

    def close(self) -> None:
        if not self.closing and self.error is None and not self._transport.is_closing():
            self._close_frame(struct.pack("!H", 1000))
        self._transport.close()

    def _close_frame(self, payload: bytes) -> None:
        self.closing = True
        self._send(OP_CLOSE, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        self._transport.write(encode_frame(opcode, payload, mask=True))

    # what the endpoint sent, toward the client -------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol
        self._transport.set_protocol(_TgWsProtocol(protocol, self))

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self._protocol

    def answer(self, cutter: FrameCutter) -> None:
        """Answer the control frames `cutter` found: a ping with a pong, a close frame
        with one (unless ours went out first)."""
        for opcode, payload in cutter.controls:
            if opcode == OP_PING and not self.closing:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE and not self.closing:
                self._close_frame(payload[:2])
        cutter.controls.clear()

    def fail(self, why: str) -> None:
        """Carry nothing more: the relay resets the client (the close frame, if any, and
        the TLS close go out first)."""
        if self.error is not None:
            return
        self.error = ConnectionResetError(f"tgws to {self.host}: {why}")
        log.info("%s; closing the connection", self.error)
        if not self.closing and not self._transport.is_closing():
            try:
                self._close_frame(struct.pack("!H", 1002))
            except Exception:  # best effort: the connection is going away either way
                pass
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _TgWsProtocol(asyncio.BufferedProtocol):
    """The TLS transport's protocol: decrypted bytes land in the relay's buffer, the frame
    heads are cut out there (control frames answered), and the relay is told of the
    payload, in one callback."""

    def __init__(self, relay: asyncio.BufferedProtocol, owner: _TgWsTransport) -> None:
        self.relay = relay
        self.owner = owner
        self.ended = False
        self._view: memoryview | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.relay.get_buffer(sizehint)
        self._view = view if isinstance(view, memoryview) else memoryview(view)
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view, self._view = self._view, None  # an idle connection keeps no relay buffer
        owner = self.owner
        if self.ended or owner.error is not None:
            return
        cutter = owner.cutter
        assert view is not None
        try:
            size = cutter.feed(view, nbytes)
        except WebSocketError as exc:
            owner.fail(f"the endpoint broke the WebSocket protocol: {exc}")
            return
        if cutter.controls:
            owner.answer(cutter)
        if size:
            self.relay.buffer_updated(size)
        if cutter.closed and not self.ended:
            self.ended = True
            self.relay.eof_received()

    def eof_received(self) -> None:
        owner = self.owner
        if self.ended or owner.error is not None:
            return
        if owner.cutter.inside:
            owner.fail("the endpoint's connection ended inside a WebSocket frame")
            return
        self.ended = True  # ended without a close frame: still an end
        self.relay.eof_received()  # (its answer is not the TLS transport's business)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.connection_lost(exc if exc is not None else self.owner.error)

    def pause_writing(self) -> None:
        self.relay.pause_writing()

    def resume_writing(self) -> None:
        self.relay.resume_writing()
