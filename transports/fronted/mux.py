"""Many connections over one tunnel: the multiplexed form of the fronted protocol.

A relay that supports it selects the ALPN protocol "detour-mux/1" in the inner TLS
handshake; an older relay selects nothing and the tunnel carries one connection as before
(protocol.py). Inside the inner TLS, frames (frames.py: the codec and its table).

Stream ids are chosen by the client: 1, 2, 3, ..., each used once per session. Flow control
is per stream and per direction (flow.py: windows, credit, BLOCKED and growth, sans-IO).

This module is the rest: MuxStream (a Stream over one stream id: reading, writing, half-close,
reset, the frames flow.py asks for) and MuxSession (a reader task that dispatches frames to
streams, writes straight to the tunnel, opens and answers streams, PING keepalive, GOAWAY).

A peer that sends beyond its window, reuses an id or sends a malformed frame has the whole
session closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..base import DialError, Endpoint, Failure, Op, Stream
from ..wire import NeedMore, ProtocolError
from .flow import MAX_WINDOW, WINDOW_SIZE, Command, Flow, SendBlocked, SendData, SendWindow
from .frames import (
    BLOCKED,
    DATA,
    FIN,
    GOAWAY,
    HEADER,
    MAX_CONTROL,
    MAX_DATA,
    NAMES,
    OPEN,
    PING,
    PONG,
    REPLY,
    RESET,
    WINDOW,
    Frame,
    encode_frame,
    encode_frame_into,
    parse_frame,
)
from .protocol import encode_failure, encode_request, encode_success, parse_reply, parse_request

__all__ = [
    "ALPN",
    "BLOCKED",
    "DATA",
    "FIN",
    "GOAWAY",
    "HEADER",
    "MAX_CONTROL",
    "MAX_DATA",
    "MAX_WINDOW",
    "NAMES",
    "OPEN",
    "PING",
    "PONG",
    "REPLY",
    "RESET",
    "WINDOW",
    "WINDOW_SIZE",
    "Frame",
    "MuxSession",
    "MuxStream",
    "encode_frame",
    "parse_frame",
]

log = logging.getLogger("detour.transports.mux")

ALPN = "detour-mux/1"

MAX_STREAM_ID = 0xFFFFFFFF
READ_SIZE = 512 * 1024
# Frames this large are built in the session's one reused buffer when the tunnel copies each
# write before returning (TLS does): no new buffer, and its page faults, per frame.
SCRATCH_MIN = 16 * 1024
RESET_TEXT = 200


class MuxStream(Stream):
    """One connection inside a session. Same contract as any Stream: `write` never blocks
    (what the peer's window cannot take yet waits here), `drain` waits until it has gone
    out, `write_eof` half-closes, `close` ends our side and stops the peer's. The windows,
    the credit and the queue are `flow`'s (flow.py); this class does the rest."""

    def __init__(self, session: MuxSession, ident: int) -> None:
        self.session = session
        self.id = ident
        self.flow = Flow()
        self._incoming: deque[bytes] = deque()
        self._returned = b""  # unread() bytes: already credited
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._remote_eof = False
        self._eof_wanted = False
        self._eof_sent = False
        self._closed = False  # close() or abort() was called here
        self._error: BaseException | None = None  # reset, or the session died
        self._finished = False  # out of the session's table
        self.reply: asyncio.Future[DialError | None] | None = None

    def __repr__(self) -> str:
        return f"MuxStream({self.id})"

    def _send(self, commands: list[Command]) -> None:
        """Send the frames flow control asked for."""
        send = self.session.send
        for command in commands:
            if type(command) is SendData:
                send(DATA, self.id, command.chunk)
            elif type(command) is SendWindow:
                send(WINDOW, self.id, struct.pack("!I", command.increment))
            else:
                assert type(command) is SendBlocked
                send(BLOCKED, self.id)

    # --- reading --------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        if n < 1:
            raise ValueError("read() needs a positive size")
        if self._returned:
            data, self._returned = self._returned[:n], self._returned[n:]
            return data
        while not self._incoming:
            if self._remote_eof or self._closed:
                return b""  # (a reset after the peer's FIN loses nothing of this direction)
            if self._error is not None:
                raise self._error
            self._readable.clear()
            await self._readable.wait()
        data = self._incoming[0]
        if len(data) <= n:
            self._incoming.popleft()
        else:
            self._incoming[0] = data[n:]
            data = data[:n]
        commands = self.flow.on_read(len(data))
        if commands:
            self._send(commands)
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self._returned = bytes(data) + self._returned

    def _on_data(self, payload: bytes) -> None:
        if self._remote_eof:
            raise ProtocolError(f"stream {self.id}: data after FIN")
        try:
            commands = self.flow.on_data(len(payload))
        except ProtocolError as exc:
            raise ProtocolError(f"stream {self.id}: {exc}") from None
        if commands:
            self._send(commands)  # our reader is gone: the bytes are dropped, credited
        elif payload:
            self._incoming.append(payload)
            self._readable.set()

    def _on_blocked(self) -> None:
        self._send(self.flow.on_blocked())

    def _on_fin(self) -> None:
        if self._remote_eof:
            raise ProtocolError(f"stream {self.id}: a second FIN")
        self._remote_eof = True
        self.flow.end_receiving()
        self._readable.set()
        self._maybe_done()

    def _on_reset(self, text: str) -> None:
        self._fail(ConnectionResetError(text or "the other end reset the connection"))

    def _on_window(self, increment: int) -> None:
        try:
            commands = self.flow.on_window(increment)
        except ProtocolError as exc:
            raise ProtocolError(f"stream {self.id}: {exc}") from None
        self._send(commands)
        self._after_sending()

    # --- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._eof_wanted:
            raise RuntimeError("write() after write_eof()")
        if not data:
            return
        self._send(self.flow.write(bytes(data)))
        self._after_sending()

    def _after_sending(self) -> None:
        """Wake drain() once everything has gone; then FIN, if it was asked for."""
        if self.flow.outgoing:
            self._writable.clear()
            return
        self._writable.set()
        if self._eof_wanted and not self._eof_sent and self._error is None:
            self._eof_sent = True
            self.session.send(FIN, self.id)
            if self._closed and not self._remote_eof:
                self._reset_peer()  # closed with the peer still sending
            self._maybe_done()

    async def drain(self) -> None:
        while self.flow.outgoing and self._error is None:
            await self._writable.wait()
        if self._error is not None:
            raise self._error
        await self.session.drain()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._eof_wanted or self._error is not None:
            return
        self._eof_wanted = True
        self._after_sending()

    # --- ending ---------------------------------------------------------------------------

    def close(self) -> None:
        """Our side ends after what was written has gone out. If the peer still has data on
        its way, it is dropped and the peer told to stop (as TCP answers with a reset)."""
        if self._closed:
            return
        self._closed = True
        self._incoming.clear()
        self.flow.reader_gone()
        self._returned = b""
        self._readable.set()
        if self._eof_sent and not self._remote_eof and self._error is None:
            self._reset_peer()
        self.write_eof()  # FIN once the rest has gone (and then the reset, if still needed)
        self._maybe_done()

    def abort(self) -> None:
        if self._error is None:
            self._reset_peer()
        self._closed = True
        self.flow.stop_sending()
        self._incoming.clear()
        self.flow.reader_gone()
        self._fail(ConnectionResetError("the connection was aborted"))

    def _reset_peer(self) -> None:
        self.session.send(RESET, self.id)
        self._fail(ConnectionResetError("the connection was closed"))

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.flow.stop_sending()
        self.flow.end_receiving()
        self._readable.set()
        self._writable.set()
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(
                DialError(Failure.CONNECTION_RESET, Op.PROXY_HANDSHAKE, f"relay: {error}")
            )
        self._finish()

    def _maybe_done(self) -> None:
        if self._remote_eof and (self._eof_sent or self._closed) and not self.flow.outgoing:
            self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.session.forget(self)

    async def wait_closed(self) -> None:
        """After close(): until what was written has gone out (or the stream failed)."""
        await self._writable.wait()

    def is_closing(self) -> bool:
        return self._closed or self._error is not None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.session.tunnel.get_extra_info(name, default)


OpenHandler = Callable[[MuxStream, Endpoint], Awaitable[None]]


class MuxSession:
    """One tunnel's streams: a reader task that dispatches frames, writes straight to the
    tunnel. The client opens streams; the relay passes each OPEN to `on_open`, which must
    answer it with accept() or refuse()."""

    def __init__(
        self,
        tunnel: Stream,
        *,
        on_open: OpenHandler | None = None,
        keepalive: float | None = None,
        name: str = "mux",
    ) -> None:
        self.tunnel = tunnel
        self._scratch: bytearray | None = (
            bytearray() if getattr(tunnel, "copies_writes", False) else None
        )
        self.name = name
        self.client = on_open is None
        self._on_open = on_open
        self.streams: dict[int, MuxStream] = {}
        self._last_id = 0
        self.going_away = False
        self.error: DialError | None = None
        self.ended = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        self.last_heard = self.idle_since = loop.time()
        self.changed = asyncio.Event()  # the last stream ended, GOAWAY went out, or the end
        self.answered = 0  # streams the relay has answered (client side)
        self._keepalive = keepalive
        self._pong: asyncio.Future[None] | None = None
        self._reader = asyncio.ensure_future(self._read_loop())
        self._pinger = asyncio.ensure_future(self._ping_loop()) if keepalive else None

    def __repr__(self) -> str:
        return f"MuxSession({self.name}, {len(self.streams)} streams)"

    @property
    def alive(self) -> bool:
        return self.error is None and not self.ended.is_set()

    def usable(self, max_streams: int) -> bool:
        return (
            self.alive
            and not self.going_away
            and len(self.streams) < max_streams
            and self._last_id < MAX_STREAM_ID
        )

    # --- sending --------------------------------------------------------------------------

    def send(self, kind: int, stream: int, payload: bytes | memoryview = b"") -> None:
        if not self.alive:
            return
        try:
            if self._scratch is not None and len(payload) >= SCRATCH_MIN:
                try:
                    frame = encode_frame_into(self._scratch, kind, stream, payload)
                except BufferError:  # a view of the last frame still held below: anew
                    self._scratch = bytearray()
                    frame = encode_frame_into(self._scratch, kind, stream, payload)
                self.tunnel.write(frame)
            else:
                self.tunnel.write(encode_frame(kind, stream, payload))
        except (OSError, RuntimeError) as exc:
            self._fail(
                DialError(Failure.CONNECTION_RESET, Op.WRITE, f"the tunnel broke: {exc}"),
                abort=True,
            )

    async def drain(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            await self.tunnel.drain()
        except OSError as exc:
            self._fail(
                DialError(Failure.CONNECTION_RESET, Op.WRITE, f"the tunnel broke: {exc}"),
                abort=True,
            )
            raise self.error from None  # type: ignore[misc]

    # --- client side ----------------------------------------------------------------------

    async def open(self, target: Endpoint) -> MuxStream:
        """A new stream to `target`, once the relay has dialled it; DialError otherwise (the
        relay's own diagnosis when it could not). The caller bounds the wait."""
        if not self.alive:
            raise self.error or DialError(Failure.EOF, Op.PROXY_HANDSHAKE, "the tunnel ended")
        loop = asyncio.get_running_loop()
        self._last_id += 1
        stream = MuxStream(self, self._last_id)
        stream.reply = loop.create_future()
        self.streams[stream.id] = stream
        self.send(OPEN, stream.id, encode_request(target))
        if self._keepalive and loop.time() - self.last_heard > self._keepalive / 4:
            self.send(PING, 0, os.urandom(8))  # its answer tells a slow relay from a dead tunnel
        try:
            await self.drain()
            error = await stream.reply
        except BaseException:
            stream.abort()
            raise
        if error is not None:
            stream._fail(error)
            raise error
        return stream

    # --- relay side -----------------------------------------------------------------------

    def accept(self, stream: MuxStream) -> None:
        self.send(REPLY, stream.id, encode_success())

    def refuse(self, stream: MuxStream, reply: bytes) -> None:
        """Answer an OPEN with a failure reply (protocol.encode_failure); the stream ends."""
        self.send(REPLY, stream.id, reply)
        stream._fail(ConnectionResetError("refused"))

    def go_away(self) -> None:
        """Tell the client to open no more streams here (the relay is stopping)."""
        self.going_away = True
        self.changed.set()
        self.send(GOAWAY, 0)

    # --- receiving ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        pending = b""  # the start of a frame that continues in the next read
        error: DialError | None = None
        try:
            while True:
                chunk = await self.tunnel.read(READ_SIZE)
                if not chunk:
                    if pending:
                        raise ProtocolError("the tunnel ended inside a frame")
                    break
                self.last_heard = asyncio.get_running_loop().time()
                # A read is usually whole frames (one TLS write each): parsed where it lies.
                data = pending + chunk if pending else chunk
                start = 0
                try:
                    while True:
                        used, frame = parse_frame(data, start)
                        start += used
                        self._dispatch(frame)
                except NeedMore:
                    pass
                pending = data[start:]
        except ProtocolError as exc:
            error = DialError(Failure.PROXY_PROTOCOL_ERROR, Op.READ, f"the tunnel: {exc}")
            log.info("%s: protocol error, closing: %s", self.name, exc)
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            error = DialError(
                Failure.CONNECTION_RESET, Op.READ, f"the tunnel broke: {exc or type(exc).__name__}"
            )
        except asyncio.CancelledError:
            error = DialError(Failure.CONNECTION_RESET, Op.READ, "the tunnel was closed")
            raise
        finally:
            self._fail(
                error or DialError(Failure.EOF, Op.READ, "the tunnel ended"),
                abort=error is not None,
                reader=True,
            )

    def _dispatch(self, frame: Frame) -> None:
        kind, ident, payload = frame.kind, frame.stream, frame.payload
        if kind == PING:
            self.send(PONG, 0, payload)
            return
        if kind == PONG:
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
            return
        if kind == GOAWAY:
            if not self.client:
                raise ProtocolError("GOAWAY from the client")
            self.going_away = True
            return
        if kind == OPEN:
            self._on_open_frame(ident, payload)
            return
        stream = self.streams.get(ident)
        if stream is None:
            if ident > self._last_id:
                raise ProtocolError(f"a {NAMES[kind]} frame for stream {ident}, never opened")
            if kind == DATA:
                self.send(RESET, ident)  # gone here: tell the peer to stop sending
            return  # frames in flight for a stream that has ended here
        if kind == DATA:
            stream._on_data(payload)
        elif kind == FIN:
            stream._on_fin()
        elif kind == RESET:
            text = payload[:RESET_TEXT].decode("utf-8", "replace")
            stream._on_reset("".join(c for c in text if c.isprintable()))
        elif kind == WINDOW:
            stream._on_window(struct.unpack("!I", payload)[0])
        elif kind == BLOCKED:
            stream._on_blocked()
        elif kind == REPLY:
            if not self.client or stream.reply is None or stream.reply.done():
                raise ProtocolError(f"an unexpected REPLY for stream {ident}")
            used, error = parse_reply(payload)
            if used != len(payload):
                raise ProtocolError("a REPLY with bytes after the reply")
            self.answered += 1
            stream.reply.set_result(error)

    def _on_open_frame(self, ident: int, payload: bytes) -> None:
        if self.client or self._on_open is None:
            raise ProtocolError("OPEN from the relay")
        if ident <= self._last_id:
            raise ProtocolError(f"stream {ident} opened again (last {self._last_id})")
        used, target = parse_request(payload)
        if used != len(payload):
            raise ProtocolError("an OPEN with bytes after the request")
        self._last_id = ident
        stream = MuxStream(self, ident)
        self.streams[ident] = stream
        self.idle_since = asyncio.get_running_loop().time()
        if self.going_away:
            self.refuse(stream, _GOING_AWAY)
            return
        task = asyncio.ensure_future(self._on_open(stream, target))
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)

    # --- life -----------------------------------------------------------------------------

    def forget(self, stream: MuxStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            if not self.streams:
                self.idle_since = asyncio.get_running_loop().time()
                self.changed.set()

    async def _ping_loop(self) -> None:
        """Client side: a silent tunnel is asked for a PONG; no answer within the keepalive
        interval ends the session (a NAT or middlebox dropped it), so new connections do not
        wait on a dead tunnel and old ones learn it."""
        assert self._keepalive is not None
        loop = asyncio.get_running_loop()
        interval = self._keepalive
        while self.alive:
            silent = loop.time() - self.last_heard
            if silent < interval:
                await asyncio.sleep(interval - silent)
                continue
            self._pong = loop.create_future()
            self.send(PING, 0, os.urandom(8))
            try:
                async with asyncio.timeout(interval):
                    await self._pong
            except TimeoutError:
                self._fail(
                    DialError(
                        Failure.TIMEOUT, Op.READ, f"the relay did not answer for {interval:g}s"
                    ),
                    abort=True,
                )
                return

    def _fail(self, error: DialError, *, abort: bool, reader: bool = False) -> None:
        if self.error is None:
            self.error = error
        for stream in list(self.streams.values()):
            stream._fail(ConnectionResetError(str(error)))
        self.streams.clear()
        if not reader:
            self._reader.cancel()
        if self._pinger is not None and asyncio.current_task() is not self._pinger:
            self._pinger.cancel()
        if abort:
            self.tunnel.abort()
        else:
            self.tunnel.close()
        self.ended.set()
        self.changed.set()

    def close(self) -> None:
        """End the session and every stream in it."""
        if not self.ended.is_set():
            self._fail(DialError(Failure.EOF, Op.READ, "the tunnel was closed"), abort=False)

    async def aclose(self) -> None:
        self.close()
        for task in (self._reader, self._pinger, *self.handlers):
            if task is not None:
                task.cancel()
        tasks = [t for t in (self._reader, self._pinger, *self.handlers) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            async with asyncio.timeout(1):
                await self.tunnel.wait_closed()


_GOING_AWAY = encode_failure(
    DialError(Failure.PROXY_REFUSED, Op.CONNECT, "the relay is stopping; try again")
)
