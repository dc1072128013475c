"""UDP through the fronted tunnel: datagrams inside one stream of a multiplexed tunnel.

How a client asks: it opens a stream (mux.py's OPEN) to the reserved destination
ASSOCIATE (`udp.detour.invalid` port 9; `.invalid` never resolves, RFC 6761). A relay
that carries UDP answers REPLY ok and the stream carries datagrams from then on; a relay
from before UDP treats it as any destination and refuses it (not a service it serves, or no
such name): the client says "the relay carries no UDP" with the relay's own words, at once,
and the tunnel's other connections are untouched. This is the negotiation: asked for, and
an older peer answers without it, as the multiplexing ALPN and the capped subprotocol are.

Inside the stream, both ways, one record per datagram (sans-IO here, fuzzed in tests):

    +------------+------+----------+----------+-----------+
    | length (2) | ATYP | DST.ADDR | DST.PORT |  payload  |
    +------------+------+----------+----------+-----------+
      bytes after the length field    01 v4 (4), 03 name (1 + name), 04 v6 (16)

From the client, DST is where the payload goes; toward it, where the payload came from. The
stream keeps order and boundaries; the tunnel's flow control applies, and what the window
cannot take beyond BACKLOG bytes is dropped as UDP would drop it (a call wants fresh
datagrams, not old ones late). Because the association is a stream of the multiplexed
session, it rides the capped carriers too (carrier=capped).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..base import DialError, Endpoint, Failure, Op
from ..socks import encode_address, parse_address
from ..wire import ProtocolError

if TYPE_CHECKING:
    from .client import FrontDialer
    from .mux import MuxStream

__all__ = [
    "ASSOCIATE",
    "BACKLOG",
    "COALESCE_BYTES",
    "COALESCE_TURNS",
    "MAX_RECORD",
    "FrontDatagrams",
    "RecordBatch",
    "RecordReader",
    "RecordWriter",
    "encode_record",
]

log = logging.getLogger("detour.transports.front")

ASSOCIATE = Endpoint("udp.detour.invalid", 9)
MAX_RECORD = 0xFFFF  # bytes after the length field
BACKLOG = 256 * 1024  # bytes waiting for the tunnel's window beyond which datagrams drop
COALESCE_TURNS = 8  # turns of the event loop a batch of records may wait while more arrive
COALESCE_BYTES = 32 * 1024  # ... and the bytes at which it goes out at once
_LENGTH = struct.Struct("!H")


def encode_record(address: Endpoint, payload: bytes) -> bytes:
    """One datagram's record; ValueError when it cannot be one (too large, a bad name)."""
    body = encode_address(address.host, address.port)
    size = len(body) + len(payload)
    if size > MAX_RECORD:
        raise ValueError(f"a datagram of {len(payload)} bytes is larger than a record")
    return _LENGTH.pack(size) + body + payload


def parse_body(body: bytes) -> tuple[Endpoint, bytes]:
    """The address and payload of one record's body; ProtocolError says what is wrong."""
    if not body:
        raise ProtocolError("an empty datagram record")
    address, end = parse_address(body, 0, "a datagram record")
    if address.port == 0:
        raise ProtocolError("a datagram record for port 0")
    return address, body[end:]


class RecordReader:
    """Splits the stream's bytes into datagrams: `feed` returns those complete so far and
    keeps the rest; ProtocolError for a record that is no datagram (the stream is then
    unusable: its framing is lost)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[Endpoint, bytes]]:
        self._buf += data
        out: list[tuple[Endpoint, bytes]] = []
        buf, start = self._buf, 0
        while len(buf) - start >= 2:
            (size,) = _LENGTH.unpack_from(buf, start)
            if len(buf) - start - 2 < size:
                break
            out.append(parse_body(bytes(buf[start + 2 : start + 2 + size])))
            start += 2 + size
        del buf[:start]
        return out


class RecordBatch:
    """Records waiting to go out in one write, and when to write them (sans-IO: the writer
    asks `due` once per turn of the event loop while records wait).

    A batch goes out at the first turn that brought no new record (the datagrams that were
    arriving together have all come), when it holds `limit` bytes, or after `turns` turns
    of records still arriving (a steady stream goes out at least that often). Sparse
    datagrams therefore wait one turn of the loop, as before; a burst goes out as one frame
    through the tunnel instead of one frame per datagram. Each record keeps its datagram's
    boundary (the length in front): batching joins records, never datagrams."""

    def __init__(self, *, turns: int = COALESCE_TURNS, limit: int = COALESCE_BYTES) -> None:
        self.turns = turns
        self.limit = limit
        self._parts: list[bytes] = []
        self.size = 0  # bytes of the records waiting
        self.count = 0  # records waiting
        self._seen = 0  # records at the last `due`
        self._waited = 0  # turns waited so far

    def add(self, address: Endpoint, payload: bytes) -> None:
        """One datagram's record; ValueError when it cannot be one (too large, a bad name).
        Header and payload are kept apart and joined once, in `take`."""
        head = encode_address(address.host, address.port)
        size = len(head) + len(payload)
        if size > MAX_RECORD:
            raise ValueError(f"a datagram of {len(payload)} bytes is larger than a record")
        self._parts.append(_LENGTH.pack(size) + head)
        self._parts.append(payload)
        self.size += 2 + size
        self.count += 1
        if self.count == 1:
            self._seen = 1  # a batch's first record is no growth: alone, it goes next turn

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def due(self) -> bool:
        """Called once per turn while records wait: whether to write them now."""
        self._waited += 1
        grew, self._seen = self.count > self._seen, self.count
        return self.full or not grew or self._waited > self.turns

    def take(self) -> bytes:
        """The waiting records as one buffer (b"" when none); the batch starts again."""
        data = b"".join(self._parts)
        self._parts = []
        self.size = self.count = self._seen = self._waited = 0
        return data


class RecordWriter:
    """Writes records to the association's stream in batches (RecordBatch: those arriving
    over consecutive turns of the event loop in one write, one frame through the tunnel);
    `write` is False when the datagram is dropped instead (the stream is gone, or BACKLOG
    bytes wait already). `turns=0` writes each turn's records at the next turn, without
    waiting for more (as before batching: what the benchmark compares with; the module's
    COALESCE_TURNS is the default)."""

    def __init__(
        self,
        stream: MuxStream,
        *,
        turns: int | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        self.stream = stream
        self.batch = RecordBatch(turns=COALESCE_TURNS if turns is None else turns)
        self.writes = 0  # writes to the stream (each one frame, when the window allows)
        self._on_write = on_write  # told the records of each write (the relay counts them)
        self._handle: asyncio.Handle | None = None

    def write(self, address: Endpoint, payload: bytes) -> bool:
        stream, batch = self.stream, self.batch
        if stream.is_closing() or stream.flow.pending + batch.size > BACKLOG:
            return False
        try:
            batch.add(address, payload)
        except ValueError:
            return False
        if batch.full:
            self.flush()
        elif self._handle is None:
            loop = asyncio.get_running_loop()
            if batch.turns == 0:
                self._handle = loop.call_soon(self.flush)
            else:
                # A timer due now runs after the next turn's I/O callbacks (call_soon would
                # run before them): the datagrams that turn brings join this batch.
                self._handle = loop.call_at(loop.time(), self._tick)
        return True

    def _tick(self) -> None:
        if self.batch.due():
            self.flush()
        else:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time(), self._tick)

    def flush(self) -> None:
        self.cancel()
        count = self.batch.count
        data = self.batch.take()
        if data and not self.stream.is_closing():
            self.writes += 1
            if self._on_write is not None:
                self._on_write(count)
            try:
                self.stream.write(data)
            except (OSError, RuntimeError):
                pass  # the stream ended: its reader ends the association

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


# --- the client's side ------------------------------------------------------------------------

Receive = Callable[[bytes, Endpoint], None]


class FrontDatagrams:
    """The UDP side of a `front:` route (transports/datagram.py's DatagramDialer)."""

    def __init__(self, dialer: FrontDialer) -> None:
        self.dialer = dialer

    def open(self, receive: Receive) -> FrontSession:
        return FrontSession(self.dialer, receive)

    def __repr__(self) -> str:
        return f"FrontDatagrams({self.dialer.key.front!r})"


class FrontSession:
    """One client association: one stream in a tunnel for all its destinations, opened on
    the first datagram and again after it ended (the tunnel closed, the relay's idle
    timeout)."""

    def __init__(self, dialer: FrontDialer, receive: Receive) -> None:
        self._dialer = dialer
        self._receive = receive
        self._stream: MuxStream | None = None
        self._writer: RecordWriter | None = None
        self._opening: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = False
        self.dropped = 0  # datagrams the tunnel's backlog or size could not take
        self.malformed = 0  # associations ended by a record that was no datagram

    def ready(self, target: Endpoint) -> bool:
        stream = self._stream
        return stream is not None and not stream.is_closing()

    async def prepare(self, target: Endpoint) -> None:
        if self.ready(target):
            return
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._associate())
            # Its error is for the callers waiting; one that gave up leaves it unread.
            self._opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(self._opening)

    async def _associate(self) -> None:
        dialer = self._dialer
        front = dialer.key.front
        if not dialer.mux:
            raise DialError(
                Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE,
                f"front {front}: UDP goes only through a multiplexed tunnel (mux=off)",
            )  # fmt: skip
        session = await dialer._session()
        if session is None:
            raise DialError(
                Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE,
                f"front {front}: the relay carries no UDP (it does not multiplex)",
            )  # fmt: skip
        try:
            stream = await dialer._open(session, ASSOCIATE)
        except DialError as exc:
            if session.alive and exc.failure is not Failure.TIMEOUT:
                raise DialError(
                    Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE,
                    f"front {front}: the relay carries no UDP ({exc.detail}; a relay from "
                    "before UDP in the tunnel answers so)",
                ) from None  # fmt: skip
            raise
        if self.closed:
            stream.abort()
            raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")
        self._stream = stream
        self._writer = RecordWriter(stream)
        self._reader = asyncio.get_running_loop().create_task(
            self._read(stream), name="detour-udp-front-reader"
        )

    async def _read(self, stream: MuxStream) -> None:
        reader = RecordReader()
        try:
            while chunk := await stream.read(65536):
                for source, payload in reader.feed(chunk):
                    self._receive(payload, source)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("front %s: UDP from the relay: %s", self._dialer.key.front, exc)
        except (OSError, DialError):
            pass  # the tunnel ended: the next datagram opens a new association
        finally:
            if self._stream is stream:
                self._stream = None
                if self._writer is not None:
                    self._writer.cancel()
                self._writer = None
            stream.abort()

    def send(self, payload: bytes, target: Endpoint) -> None:
        writer = self._writer
        if writer is None or not writer.write(target, payload):
            self.dropped += 1

    def close(self) -> None:
        self.closed = True
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._reader is not None:
            self._reader.cancel()
        if self._writer is not None:
            self._writer.flush()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
