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

    hello   | version 1 (1) | flags (1): 01 a new session, 02 early | session id (16) |
            | allowance (4) |
    welcome | version 1 (1) | status (1): 00 ok, 01 no such session, 02 refused |
    confirm | allowance (4) |     (after an early hello only)

A relay that offers `detour-carrier/2` also takes an *early* hello: one sent right behind the
upgrade request, before the front's answer (one round trip less per carrier). The client
cannot know then how large the front's answer will be, so the early hello's allowance is
provisional: the budget less the TLS handshake, the largest answer seen on this front's
earlier carriers (learned on carriers with the hello after the answer), SLACK and the margin,
less HOLD. Once the answer is in, the client sends the confirm: the allowance for the
answer it got (smaller where the answer grew; the next carrier then measures again). The
relay sends no more than the provisional allowance on the carrier until the confirm, so an
answer that grows by up to HOLD bytes keeps the budget.

The allowance is what the relay may send on this carrier (session segments, each write
counted with WRITE_COST for the front's framing): the budget less what the client has
already received on the connection (the TLS handshake, the upgrade's answer) and a margin.
When it is spent the relay sends a segment flagged END and nothing more there; so does the
client when its own budget is spent, and the relay answers with its END. Each side
uses the carriers in the order they opened: the client sends on the oldest with room left for
it, the relay on the oldest it has not ended; the client keeps a few fresh carriers open ahead
of need, so a spent one is replaced without a wait.

A frozen carrier: the client has sent bytes or a PING and nothing comes back for DEADLINE
seconds. It is abandoned; the client sends its unacknowledged bytes again on the next carrier
and asks the relay (REWIND) to do the same; the relay then ends every carrier older than the
one the REWIND came on. A relay that does not know the subprotocol
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
from ..wrapped import WrappedStream
from .session import END, HEADER, PING, REWIND, Segment, Session, parse_segment

__all__ = [
    "CARRIER_PROTOCOL",
    "CARRIER_PROTOCOL_EARLY",
    "DEFAULT_BUDGET",
    "HANDSHAKES",
    "CappedTunnel",
    "CarrierLimit",
    "CarrierLink",
    "Counted",
    "EarlyHelloFailed",
    "SessionStream",
    "encode_confirm",
    "encode_hello",
    "encode_welcome",
    "parse_confirm",
    "parse_hello",
    "parse_welcome",
]

log = logging.getLogger("detour.transports.front")

CARRIER_PROTOCOL = "detour-carrier/1"
CARRIER_PROTOCOL_EARLY = "detour-carrier/2"  # the relay also takes an early hello
VERSION = 1
NEW, EARLY = 1, 2
OK, UNKNOWN, REFUSED = 0, 1, 2
HELLO = struct.Struct("!BB16sI")
WELCOME = struct.Struct("!BB")
CONFIRM = struct.Struct("!I")

# Bytes a carrier may carry each way, counted on the TCP connection (TLS handshake included):
# safely under the ~16 KB after which flows freeze.
DEFAULT_BUDGET = 12 * 1024
MIN_BUDGET = 4 * 1024
MARGIN = 1024  # kept back from the relay's allowance: the front frames what it passes on
# ... at least this much once carriers the relay filled showed what the front's framing adds
# beyond the relay's own count (WRITE_COST per write); MEASURED of them are needed
MARGIN_FLOOR = 256
MEASURED = 4
WRITE_COST = 64  # counted per write on top of its bytes (a WebSocket head, a TLS record's)
DEADLINE = 4.0  # seconds without an answer after which a carrier counts as frozen
PROBE_AFTER = 1.0  # a carrier silent this long while the session is busy is asked (PING)
BUSY = 15.0  # the session counts as busy this long after its last payload either way
HIGH_WATER = 256 * 1024  # written and not acknowledged: drain() waits above this
OPEN_TRIES = 3  # carriers that fail to open in a row before the tunnel fails
SEGMENT_WRITE = 16 * 1024  # at most this many bytes of segments in one write
POOL = 6  # carriers kept open and fresh, ahead of need
PARALLEL = 6  # carriers opening at once, at most
HANDSHAKES = 2  # of those, in their TLS handshake with the front at once (modes.py)
MOST = 24  # carriers open or opening at once, at most (the relay's default limit is 32)
CLOSE_GRACE = 5.0  # a closed session's last bytes and FIN get this long to be acknowledged
SLACK = 256  # an early hello's allowance also keeps this back beyond the largest answer seen
HOLD = 2048  # ... and this, which the relay may send only after the confirm
REMEASURE = 32  # carriers with an early hello before one measures the front's answer again


class CarrierLimit(DialError):
    """The relay refused a further carrier of a session it has: the session has as many open
    as the relay allows (`[limits] carriers_per_session`). Not a failure of the route."""

    def __init__(self, detail: str) -> None:
        super().__init__(Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, detail)


class EarlyHelloFailed(DialError):
    """A carrier whose hello went with the upgrade did not open (the dialer then sends the
    hello after the answer for a while): not counted among the carriers that failed in a
    row, since the next one, with its hello after the answer, may well open."""

    def __init__(self, cause: DialError) -> None:
        super().__init__(cause.failure, cause.op, cause.detail)


# --- the hello and the welcome (sans-IO) ----------------------------------------------------


def encode_hello(session_id: bytes, *, new: bool, allowance: int, early: bool = False) -> bytes:
    return HELLO.pack(VERSION, (NEW if new else 0) | (EARLY if early else 0), session_id, allowance)


def parse_hello(buf: bytes) -> tuple[int, bytes, bool, int]:
    """(consumed, session id, new, allowance) of a `detour-carrier/1` hello; NeedMore or
    ProtocolError."""
    used, session_id, new, allowance, early = parse_hello_early(buf)
    if early:
        raise ProtocolError("not a carrier hello")
    return used, session_id, new, allowance


def parse_hello_early(buf: bytes) -> tuple[int, bytes, bool, int, bool]:
    """(consumed, session id, new, allowance, early) of a `detour-carrier/2` hello: `early`
    says a confirm follows, and the allowance is what may be sent before it."""
    if len(buf) < HELLO.size:
        raise NeedMore
    version, flags, session_id, allowance = HELLO.unpack_from(buf)
    if version != VERSION or flags & ~(NEW | EARLY):
        raise ProtocolError("not a carrier hello")
    if allowance < HEADER.size + WRITE_COST:
        raise ProtocolError(f"an allowance of {allowance} bytes")
    return HELLO.size, session_id, bool(flags & NEW), allowance, bool(flags & EARLY)


def encode_confirm(allowance: int) -> bytes:
    return CONFIRM.pack(allowance)


def parse_confirm(buf: bytes | bytearray) -> tuple[int, int]:
    """(consumed, allowance); NeedMore. Any allowance is valid: below what was sent already,
    the carrier just ends."""
    if len(buf) < CONFIRM.size:
        raise NeedMore
    return CONFIRM.size, CONFIRM.unpack_from(buf)[0]


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


class Counted(WrappedStream):
    """A stream that counts the bytes through it each way (what a censor counts)."""

    def __init__(self, inner: Stream) -> None:
        super().__init__(inner)
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

    def raw_socket_stream(self) -> Any:
        return None  # every byte must pass the counts


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
        self.ws = ws
        self.counted = counted
        self.allowance = allowance  # what the relay may send here (it stops after END)
        self.budget = budget
        self.last_rx = asyncio.get_running_loop().time()
        self.end_received = False  # the relay put everything it will put here
        self.end_sent = False  # so did we (the relay then ends it too)
        self.closed = False
        self.reader: asyncio.Task[None] | None = None
        self.early = False  # its hello went with the upgrade
        self.margin = MARGIN  # what its allowance kept back for the front's framing
        self.timings: dict[str, float] = {}  # seconds from the start to each step's end

    @property
    def up_room(self) -> int:
        return self.budget - self.counted.sent - WRITE_COST

    @property
    def can_send(self) -> bool:
        return not self.closed and not self.end_sent

    @property
    def fresh(self) -> bool:
        """Neither side has used up much of it."""
        return self.can_send and not self.end_received and self.up_room * 2 >= self.budget

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
    otherwise).

    Carriers are used in the order they opened, by each side independently: the client sends
    on the oldest that has room left for it, the relay on the oldest it has not ended. POOL
    carriers are kept open ahead (at most PARALLEL opening at once), so the next one is ready
    when one is spent."""

    def __init__(
        self,
        connect: Connect,
        *,
        budget: int = DEFAULT_BUDGET,
        deadline: float = DEADLINE,
        name: str = "capped",
        retired: Callable[[CarrierLink], None] | None = None,
        early_failed: Callable[[DialError], None] | None = None,
    ) -> None:
        self._connect = connect
        self._retired = retired  # told of every carrier both sides ended
        self._early_failed = early_failed  # told of an EarlyHelloFailed while in use
        self.budget = budget
        self.deadline = deadline
        self.name = name
        self.session_id = os.urandom(16)
        self.stream = SessionStream(name=name)
        self.links: list[CarrierLink] = []  # attached, oldest first
        self._opening: set[asyncio.Task[CarrierLink]] = set()
        self._wake = asyncio.Event()
        self._rewind_asked = False  # the next write asks the relay to rewind
        self._ping = False
        self._failures = 0
        self.pool = POOL  # fresh carriers wanted ahead
        self.most = MOST  # carriers open or opening at once; the relay's limit once it said so
        self.waiting_since: float | None = None  # sent something that wants an answer
        self.last_rx = asyncio.get_running_loop().time()
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
        self.links.append(link)
        link.reader = asyncio.ensure_future(self._read_loop(link))
        self._wake.set()
        self.stream.sendable.set()

    def _sending_link(self) -> CarrierLink | None:
        return next((link for link in self.links if link.can_send), None)

    async def _read_loop(self, link: CarrierLink) -> None:
        reader = SegmentReader()
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await link.ws.read(65536)
                if not data:
                    break
                link.last_rx = self.last_rx = loop.time()
                for segment in reader.feed(data):
                    self.stream.receive(segment)
                    if segment.flags & END:
                        link.end_received = True
                self.waiting_since = loop.time() if self.stream.session.unacked else None
                if link.end_received:
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
            if not link.closed:
                if link.end_received and not link.can_send:
                    self._retire(link)
                else:
                    self._lose(link)
            self._wake.set()

    def _end(self, link: CarrierLink) -> None:
        """Nothing more from us on `link`: the last segment there says so (END), and the
        relay ends it too."""
        link.end_sent = True
        with contextlib.suppress(OSError, RuntimeError):
            link.ws.write(self.stream.outgoing(HEADER.size, END))
        self._wake.set()

    def _retire(self, link: CarrierLink) -> None:
        if self._retired is not None and not link.closed:
            self._retired(link)
        link.close()
        if link in self.links:
            self.links.remove(link)

    def _lose(self, link: CarrierLink) -> None:
        """A carrier ended or froze before both sides were done with it: whatever was in
        flight on it either way goes again."""
        link.close(abort=True)
        if link in self.links:
            self.links.remove(link)
        self.carriers_lost += 1
        self.stream.session.rewind()
        if not link.end_received:
            self._rewind_asked = True
        self.waiting_since = None
        self._wake.set()
        self.stream.sendable.set()

    async def _write_loop(self) -> None:
        stream = self.stream
        loop = asyncio.get_running_loop()
        while not stream.ended.is_set():
            link = self._sending_link()
            if link is None:
                self._wake.set()
                stream.sendable.clear()
                await _first(stream.sendable.wait(), stream.ended.wait())
                continue
            room = min(link.up_room - HEADER.size, SEGMENT_WRITE)  # room kept for the END
            if room < 2 * HEADER.size:
                self._end(link)  # spent
                continue
            flags = (REWIND if self._rewind_asked else 0) | (PING if self._ping else 0)
            out = stream.outgoing(room, flags)
            if not out:  # nothing the window lets out: wait for an acknowledgement or a write
                stream.sendable.clear()
                await _first(stream.sendable.wait(), stream.ended.wait())
                continue
            self._rewind_asked = self._ping = False
            try:
                link.ws.write(out)
            except (OSError, RuntimeError):
                self._lose(link)
                continue
            if self.waiting_since is None and (stream.session.unacked or out[0] & PING):
                self.waiting_since = loop.time()
            if not link.fresh:
                self._wake.set()
            if stream.session.buffered <= HIGH_WATER:
                stream._room.set()
            await asyncio.sleep(0)

    async def _drive(self) -> None:
        """Open carriers ahead of need, find frozen ones, end when the session has."""
        loop = asyncio.get_running_loop()
        stream = self.stream
        closing_since: float | None = None
        try:
            while not stream.ended.is_set():
                now = loop.time()
                waiting = self.waiting_since
                if waiting is not None and now - waiting > self.deadline:
                    self._frozen()
                elif (
                    waiting is None
                    and now - self.last_rx > PROBE_AFTER
                    and now - stream.last_payload < BUSY
                ):
                    self._ping = True  # no answer to this within the deadline: frozen
                    stream.sendable.set()
                for task in [t for t in self._opening if t.done()]:
                    self._opening.discard(task)
                    try:
                        self._attach(task.result())
                    except CarrierLimit as exc:
                        # As many as are open now is the relay's limit; the session is fine.
                        self.most = max(2, min(self.most, len(self.links)))
                        self.pool = min(self.pool, self.most - 1)
                        log.info("%s: %s: at most %d open", self.name, exc, self.most)
                    except EarlyHelloFailed as exc:
                        log.info("%s: a carrier did not open: %s", self.name, exc)
                        if not stream.closed and self._early_failed is not None:
                            self._early_failed(exc)
                    except DialError as exc:
                        self._failures += 1
                        log.info("%s: a carrier did not open: %s", self.name, exc)
                        if self._failures >= OPEN_TRIES:
                            stream.fail(exc)
                            return
                # At the limit: give back the oldest carriers the relay has ended (we may
                # still have sent on them) until one more fits.
                over = len(self.links) + len(self._opening) - self.most + 1
                for link in [x for x in self.links if x.end_received and x.can_send][:over]:
                    self._end(link)
                for link in list(self.links):
                    if link.end_received and not link.can_send:
                        self._retire(link)
                fresh = sum(1 for link in self.links if link.fresh)
                wanted = min(
                    self.pool - fresh - len(self._opening),
                    self.most - len(self.links) - len(self._opening),
                )
                if stream.closed and fresh:
                    wanted = 0
                for _ in range(max(0, min(wanted, PARALLEL - len(self._opening)))):
                    task = asyncio.ensure_future(self._connect(self.session_id, False))
                    task.add_done_callback(lambda _: self._wake.set())
                    self._opening.add(task)
                if stream.closed:
                    closing_since = closing_since or now
                    if stream.session.finished or now - closing_since > CLOSE_GRACE:
                        break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await self._wake.wait()
        finally:
            self._shutdown()

    def _frozen(self) -> None:
        """Nothing came back within the deadline: the carriers in use froze."""
        sending = self._sending_link()
        receiving = next((link for link in self.links if not link.end_received), None)
        for link in {id(x): x for x in (sending, receiving) if x is not None}.values():
            log.info(
                "%s: a carrier froze after %d bytes from the front: the next one",
                self.name, link.counted.received,
            )  # fmt: skip
            self._lose(link)
        self.waiting_since = None

    def _shutdown(self) -> None:
        for task in self._opening:
            task.cancel()
            task.add_done_callback(_retrieved)
        for link in self.links:
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
