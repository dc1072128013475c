"""The capped mode of `front:`: one tunnel carried across many short connections to the
front, none of which carries more than a byte budget either way.

Since 2025 censors freeze TLS flows to CDN and foreign hosting addresses after about 16 KB
from the server: no reset, the flow just stops. One long-lived WebSocket is then the worst
case. Here each connection to the front (a "carrier": TCP, TLS with the front's name --
resumed when the front allows, so no certificates --, a WebSocket upgrade offering the
subprotocol `detour-carrier/1`) carries a part of one session's byte stream (session.py:
offsets, acknowledgements, retransmission), and is replaced before its budget is spent. The
inner TLS (the relay's pinned certificate) and the multiplexed connections (mux.py) run on
top of the session's stream, unchanged.

On each carrier the client's first WebSocket message is a hello, the relay's a welcome:

    hello   | version 1 (1) | flags (1): 01 a new session | session id (16) | allowance (4) |
    welcome | version 1 (1) | status (1): 00 ok, 01 no such session, 02 refused |

The allowance is what the relay may send on this carrier (session segments, each write
counted with WRITE_COST for the front's framing): the budget less what the client has
already received on the connection (the TLS handshake, the upgrade's answer) and a margin.
When it is spent the relay sends a segment flagged END and nothing more there; the client has
by then opened the next carrier (when half a carrier's allowance is gone), and the relay
moves to the newest carrier as soon as it is attached. Each side sends on its newest carrier
only.

A frozen carrier: the client has sent bytes or a PING and nothing comes back for DEADLINE
seconds. It is abandoned; the client sends its unacknowledged bytes again on the next carrier
and asks the relay (REWIND) to do the same. A relay that does not know the subprotocol
answers the upgrade without it: the client then uses the long-lived mode (client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from ..base import DialError, Failure, Op, Stream
from ..wire import NeedMore, ProtocolError
from .session import END, HEADER, PING, REWIND, Segment, Session, parse_segment

__all__ = [
    "CARRIER_PROTOCOL",
    "DEFAULT_BUDGET",
    "CappedTunnel",
    "CarrierLink",
    "Counted",
    "SessionStream",
    "encode_hello",
    "encode_welcome",
    "parse_hello",
    "parse_welcome",
]

log = logging.getLogger("detour.transports.front")

CARRIER_PROTOCOL = "detour-carrier/1"
VERSION = 1
NEW = 1
OK, UNKNOWN, REFUSED = 0, 1, 2
HELLO = struct.Struct("!BB16sI")
WELCOME = struct.Struct("!BB")

# Bytes a carrier may carry each way, counted on the TCP connection (TLS handshake included):
# safely under the ~16 KB after which flows freeze.
DEFAULT_BUDGET = 12 * 1024
MIN_BUDGET = 4 * 1024
MARGIN = 1024  # kept back from the relay's allowance: the front frames what it passes on
WRITE_COST = 64  # counted per write on top of its bytes (a WebSocket head, a TLS record's)
DEADLINE = 4.0  # seconds without an answer after which a carrier counts as frozen
PROBE_AFTER = 1.0  # a carrier silent this long while the session is busy is asked (PING)
BUSY = 15.0  # the session counts as busy this long after its last payload either way
HIGH_WATER = 256 * 1024  # written and not acknowledged: drain() waits above this
OPEN_TRIES = 3  # carriers that fail to open in a row before the tunnel fails
SEGMENT_WRITE = 16 * 1024  # at most this many bytes of segments in one write
CLOSE_GRACE = 5.0  # a closed session's last bytes and FIN get this long to be acknowledged


# --- the hello and the welcome (sans-IO) ----------------------------------------------------


def encode_hello(session_id: bytes, *, new: bool, allowance: int) -> bytes:
    return HELLO.pack(VERSION, NEW if new else 0, session_id, allowance)


def parse_hello(buf: bytes) -> tuple[int, bytes, bool, int]:
    """(consumed, session id, new, allowance); NeedMore or ProtocolError."""
    if len(buf) < HELLO.size:
        raise NeedMore
    version, flags, session_id, allowance = HELLO.unpack_from(buf)
    if version != VERSION or flags & ~NEW:
        raise ProtocolError("not a carrier hello")
    if allowance < HEADER.size + WRITE_COST:
        raise ProtocolError(f"an allowance of {allowance} bytes")
    return HELLO.size, session_id, bool(flags & NEW), allowance


def encode_welcome(status: int) -> bytes:
    return WELCOME.pack(VERSION, status)


def parse_welcome(buf: bytes) -> tuple[int, int]:
    if len(buf) < WELCOME.size:
        raise NeedMore
    version, status = WELCOME.unpack_from(buf)
    if version != VERSION or status not in (OK, UNKNOWN, REFUSED):
        raise ProtocolError("not a carrier welcome")
    return WELCOME.size, status


class SegmentReader:
    """Segments out of a carrier's bytes, as they come."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Segment]:
        self._buffer += data
        out, start = [], 0
        try:
            while True:
                used, segment = parse_segment(self._buffer, start)
                out.append(segment)
                start += used
        except NeedMore:
            pass
        del self._buffer[:start]
        return out


# --- a stream that counts -------------------------------------------------------------------


class Counted(Stream):
    """A stream that counts the bytes through it each way (what a censor counts)."""

    def __init__(self, inner: Stream) -> None:
        self.inner = inner
        self.received = 0
        self.sent = 0

    async def read(self, n: int = 65536) -> bytes:
        data = await self.inner.read(n)
        self.received += len(data)
        return data

    def unread(self, data: bytes) -> None:
        self.received -= len(data)
        self.inner.unread(data)

    def write(self, data: bytes) -> None:
        self.sent += len(data)
        self.inner.write(data)

    async def drain(self) -> None:
        await self.inner.drain()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        self.inner.write_eof()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)


# --- the session's stream -------------------------------------------------------------------


class SessionStream(Stream):
    """The session's byte stream as a detour Stream, for the inner TLS. The carriers' driver
    (CappedTunnel on the client, the relay's hub) feeds it segments and takes what it has to
    send."""

    def __init__(self, session: Session | None = None, name: str = "session") -> None:
        self.session = session or Session()
        self.name = name
        self.changed = asyncio.Event()  # something to read, or the end
        self.sendable = asyncio.Event()  # something to send
        self._room = asyncio.Event()
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self.closed = False
        self._unread = b""
        self.last_payload = asyncio.get_running_loop().time()

    def __repr__(self) -> str:
        return f"SessionStream({self.name})"

    # the driver's side

    def receive(self, segment: Segment) -> None:
        self.session.receive(segment)
        if segment.payload:
            self.last_payload = asyncio.get_running_loop().time()
        self.changed.set()
        if self.session.buffered <= HIGH_WATER:
            self._room.set()
        if self.session.pending():
            self.sendable.set()

    def outgoing(self, budget: int, flags: int = 0) -> bytes:
        sent = self.session.sent
        out = self.session.outgoing(budget, flags=flags)
        if self.session.sent != sent:
            self.last_payload = asyncio.get_running_loop().time()
        return out

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.ended.is_set():
            self.error = error
        self.closed = True
        self.changed.set()
        self._room.set()
        self.sendable.set()
        self.ended.set()

    def finish(self) -> None:
        self.closed = True
        self.changed.set()
        self._room.set()
        self.ended.set()

    # the Stream

    async def read(self, n: int = 65536) -> bytes:
        if self._unread:
            data, self._unread = self._unread[:n], self._unread[n:]
            return data
        while True:
            data = self.session.read(n)
            if data:
                if self.session.pending():
                    self.sendable.set()  # the window opened: the peer may be waiting
                return data
            if self.error is not None:
                raise self.error
            if self.session.at_eof or self.ended.is_set():
                return b""
            self.changed.clear()
            await self.changed.wait()

    def unread(self, data: bytes) -> None:
        self._unread = bytes(data) + self._unread

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self.closed or self.session._fin_wanted:
            raise ConnectionResetError("the session is closing")
        if data:
            self.session.write(data)
            self.sendable.set()

    async def drain(self) -> None:
        while self.session.buffered > HIGH_WATER and self.error is None:
            self._room.clear()
            await self._room.wait()
        if self.error is not None:
            raise self.error

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self.session._fin_wanted and self.error is None:
            self.session.write_eof()
            self.sendable.set()

    def close(self) -> None:
        self.write_eof()
        self.closed = True

    def abort(self) -> None:
        self.fail(ConnectionResetError("the session was aborted"))

    async def wait_closed(self) -> None:
        await self.ended.wait()

    def is_closing(self) -> bool:
        return self.closed or self.error is not None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


# --- the client's carriers ------------------------------------------------------------------


class CarrierLink:
    """One carrier, open: the WebSocket, the counter below its TLS, and what it has done."""

    def __init__(self, ws: Stream, counted: Counted, allowance: int, budget: int) -> None:
        loop = asyncio.get_running_loop()
        self.ws = ws
        self.counted = counted
        self.allowance = allowance  # what the relay may send here (it stops after END)
        self.budget = budget
        self.last_rx = loop.time()
        self.waiting_since: float | None = None  # sent something that wants an answer
        self.end_received = False  # the relay put everything it will put here
        self.closed = False
        self.lost = False
        self.reader: asyncio.Task[None] | None = None
        self.down_at_hello = counted.received

    @property
    def down_used(self) -> int:
        return self.counted.received - self.down_at_hello

    @property
    def up_room(self) -> int:
        return self.budget - self.counted.sent - WRITE_COST

    def half_spent(self) -> bool:
        return self.down_used * 2 >= self.allowance or self.up_room * 2 < self.budget

    def close(self, *, abort: bool = False) -> None:
        if not self.closed:
            self.closed = True
            if abort:
                self.ws.abort()
            else:
                self.ws.close()
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()


Connect = Callable[[bytes, bool], Awaitable[CarrierLink]]


class CappedTunnel:
    """The client's side: a session, its stream (`stream`), and the carriers that carry it.
    `connect(session_id, new)` opens one carrier up to the relay's welcome (DialError
    otherwise)."""

    def __init__(
        self,
        connect: Connect,
        *,
        budget: int = DEFAULT_BUDGET,
        deadline: float = DEADLINE,
        name: str = "capped",
    ) -> None:
        self._connect = connect
        self.budget = budget
        self.deadline = deadline
        self.name = name
        self.session_id = os.urandom(16)
        self.stream = SessionStream(name=name)
        self.current: CarrierLink | None = None
        self.retired: list[CarrierLink] = []
        self._opening: asyncio.Task[CarrierLink] | None = None
        self._wake = asyncio.Event()
        self._rewind_asked = False  # the next write on a carrier asks the relay to rewind
        self._ping = False
        self._failures = 0
        self.carriers_opened = 0
        self.carriers_lost = 0
        self._driver: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> SessionStream:
        """Open the first carrier (DialError as any dial's when it cannot) and start."""
        link = await self._connect(self.session_id, True)
        self._attach(link)
        self._driver = asyncio.ensure_future(self._drive())
        self._writer = asyncio.ensure_future(self._write_loop())
        return self.stream

    def _attach(self, link: CarrierLink) -> None:
        self.carriers_opened += 1
        self._failures = 0
        old, self.current = self.current, link
        if old is not None:
            self.retired.append(old)
            if old.end_received:
                old.close()
        link.reader = asyncio.ensure_future(self._read_loop(link))
        self._wake.set()
        self.stream.sendable.set()

    async def _read_loop(self, link: CarrierLink) -> None:
        reader = SegmentReader()
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await link.ws.read(65536)
                if not data:
                    break
                link.last_rx = loop.time()
                for segment in reader.feed(data):
                    self.stream.receive(segment)
                    if segment.flags & END:
                        link.end_received = True
                link.waiting_since = (
                    loop.time() if self.stream.session.unacked and link is self.current else None
                )
                if link is self.current and (link.end_received or link.half_spent()):
                    self._wake.set()  # time for the next carrier
                if link.counted.received >= link.budget:
                    break  # the relay went over the allowance: never past the budget
        except ProtocolError as exc:
            self.stream.fail(
                DialError(Failure.PROXY_PROTOCOL_ERROR, Op.READ, f"{self.name}: relay: {exc}")
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link.closed:
                pass
            elif link.end_received:
                link.close()
            else:
                self._lose(link)
            self._wake.set()

    def _lose(self, link: CarrierLink) -> None:
        """A carrier ended or froze before the relay said it was done with it: whatever was
        in flight on it either way goes again."""
        if link.closed and link.lost:
            return
        link.lost = True
        link.close(abort=True)
        self.carriers_lost += 1
        self.stream.session.rewind()
        self._rewind_asked = True
        if link is self.current:
            self.current = None
        self._wake.set()
        self.stream.sendable.set()

    async def _write_loop(self) -> None:
        stream = self.stream
        loop = asyncio.get_running_loop()
        while not stream.ended.is_set():
            link = self.current
            if link is None or link.closed:
                stream.sendable.clear()
                self._wake.clear()
                await _first(stream.sendable.wait(), self._wake.wait())
                continue
            room = min(link.up_room, SEGMENT_WRITE)
            if room < HEADER.size * 2:
                self._wake.set()  # the driver opens the next carrier
                await self._wait_for_new(link)
                continue
            flags = (REWIND if self._rewind_asked else 0) | (PING if self._ping else 0)
            out = stream.outgoing(room, flags)
            if not out:
                stream.sendable.clear()
                if not stream.session.pending():
                    await _first(stream.sendable.wait(), self._wake.wait())
                    self._wake.clear()
                continue
            self._rewind_asked = self._ping = False
            if link.half_spent():
                self._wake.set()
            try:
                link.ws.write(out)
                if link.waiting_since is None and (stream.session.unacked or out[0] & PING):
                    link.waiting_since = loop.time()
                await link.ws.drain()
            except (OSError, RuntimeError):
                self._lose(link)
            if stream.session.buffered <= HIGH_WATER:
                stream._room.set()

    async def _wait_for_new(self, link: CarrierLink) -> None:
        while self.current is link and not self.stream.ended.is_set():
            self._wake.clear()
            await self._wake.wait()

    async def _drive(self) -> None:
        """Open carriers ahead of need, find frozen ones, end when the session has."""
        loop = asyncio.get_running_loop()
        stream = self.stream
        closing_since: float | None = None
        try:
            while not stream.ended.is_set():
                now = loop.time()
                link = self.current
                if link is not None and not link.closed:
                    waiting = link.waiting_since
                    if waiting is not None and now - waiting > self.deadline:
                        log.info(
                            "%s: a carrier froze after %d bytes from the front: the next one",
                            self.name, link.counted.received,
                        )  # fmt: skip
                        self._lose(link)
                        link = None
                    elif (
                        waiting is None
                        and now - link.last_rx > PROBE_AFTER
                        and now - stream.last_payload < BUSY
                    ):
                        self._ping = True  # no answer to this within the deadline: frozen
                        stream.sendable.set()
                need = link is None or link.closed or link.end_received or link.half_spent()
                if need and self._opening is None:
                    self._opening = asyncio.ensure_future(self._connect(self.session_id, False))
                if self._opening is not None and self._opening.done():
                    opening, self._opening = self._opening, None
                    try:
                        self._attach(opening.result())
                    except DialError as exc:
                        self._failures += 1
                        log.info("%s: a carrier did not open: %s", self.name, exc)
                        if self._failures >= OPEN_TRIES:
                            stream.fail(exc)
                            break
                for old in list(self.retired):
                    if old.closed:
                        self.retired.remove(old)
                    elif old.end_received:
                        old.close()
                    elif now - old.last_rx > self.deadline:
                        # No END from the relay: it froze with whatever was on it.
                        self._lose(old)
                if stream.closed:
                    closing_since = closing_since or now
                    if stream.session.finished or now - closing_since > CLOSE_GRACE:
                        break
                self._wake.clear()
                waits = [self._wake.wait()]
                if self._opening is not None:
                    waits.append(asyncio.shield(self._opening))
                with contextlib.suppress(TimeoutError, DialError, OSError):
                    async with asyncio.timeout(0.25):
                        await _first(*waits)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            self._opening.add_done_callback(_retrieved)
        for link in [*self.retired, self.current]:
            if link is not None:
                link.close()
        if not self.stream.ended.is_set():
            self.stream.finish()
        if self._writer is not None:
            self._writer.cancel()

    def close(self) -> None:
        self.stream.fail(ConnectionResetError("the tunnel was closed"))
        if self._driver is not None:
            self._driver.cancel()


async def _first(*awaitables: Awaitable[Any]) -> None:
    """Wait until the first of `awaitables` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
