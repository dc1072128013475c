"""A byte stream that outlives its carriers: the session layer of the capped mode (capped.py),
sans-IO.

In the capped mode no TCP connection to the front carries more than a byte budget (censors
freeze flows to CDN addresses after about 16 KB from the server). One reliable, ordered,
flow-controlled byte stream runs across a succession of such short connections ("carriers"):
every byte has an offset in the stream, the receiver acknowledges the offset up to which it
holds everything, and a sender keeps what is not acknowledged until it is. A carrier that
ends or freezes with bytes in flight costs nothing but their retransmission on the next one
(`rewind`: go-back-N from the acknowledged offset; the receiver drops what it already has).
The inner TLS (pinned, end-to-end) and the multiplexed streams (mux.py) run on top of this
stream unchanged, so the relay's and the client's code above it is the same in both modes.

Frames, both ways, on any carrier:

    | flags (1) | offset (8) | ack (8) | limit (8) | length (2) | payload (length) |

    offset  the stream offset of the payload's first byte
    ack     the sender has every byte of the other direction below this offset
    limit   the other side may send bytes below this offset (flow control: what the sender
            has read plus its window); it never goes down
    flags   PING (1): answer with an acknowledgement now (a frozen carrier is found by the
            answer not coming); FIN (2): the stream ends after this payload; END (4): the
            sender puts nothing more on this carrier (its budget is spent, or a newer carrier
            replaced it); REWIND (8): send again everything not acknowledged (a carrier was
            lost with the sender's bytes perhaps on it)

A frame with no payload is an acknowledgement. Out-of-order payloads (a newer carrier faster
than the one it replaced) are kept within the window until the gap is filled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..wire import NeedMore, ProtocolError

__all__ = [
    "END",
    "FIN",
    "HEADER",
    "MAX_PAYLOAD",
    "PING",
    "REWIND",
    "Segment",
    "Session",
    "encode_segment",
    "parse_segment",
]

PING, FIN, END, REWIND = 1, 2, 4, 8
HEADER = struct.Struct("!BQQQH")
MAX_PAYLOAD = 16 * 1024 - 1  # a frame's payload, at most (budgets are a few KB anyway)
MAX_OFFSET = 1 << 62  # offsets beyond this are no stream's (2^62 bytes is never reached)
INITIAL_LIMIT = 64 * 1024  # what either side may send before it has heard the other's limit


@dataclass(frozen=True, slots=True)
class Segment:
    flags: int
    offset: int
    ack: int
    limit: int
    payload: bytes


def encode_segment(
    flags: int, offset: int, ack: int, limit: int, payload: bytes | memoryview = b""
) -> bytes:
    return HEADER.pack(flags, offset, ack, limit, len(payload)) + payload


def parse_segment(buf: bytes | bytearray, start: int = 0) -> tuple[int, Segment]:
    """(bytes used, the segment) from buf[start:]; NeedMore, or ProtocolError for bytes that
    are no segment (unknown flags, an offset no stream reaches, a payload too long)."""
    if len(buf) - start < HEADER.size:
        raise NeedMore
    flags, offset, ack, limit, length = HEADER.unpack_from(buf, start)
    if flags & ~(PING | FIN | END | REWIND):
        raise ProtocolError(f"unknown segment flags {flags:#x}")
    if max(offset, ack, limit) > MAX_OFFSET or offset + length > MAX_OFFSET:
        raise ProtocolError("a segment offset beyond any stream")
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"a segment of {length} bytes (at most {MAX_PAYLOAD})")
    end = start + HEADER.size + length
    if len(buf) < end:
        raise NeedMore
    payload = bytes(buf[start + HEADER.size : end])
    return end - start, Segment(flags, offset, ack, limit, payload)


class Session:
    """One end of the stream. Bytes written (`write`) are cut into segments by `outgoing`,
    each time for one carrier and within its remaining budget; segments from any carrier go
    to `receive`; `read` takes the bytes received in order. The caller decides when a carrier
    is lost and calls `rewind`, so everything not acknowledged goes out again."""

    def __init__(self, window: int = 256 * 1024, max_payload: int = 4096) -> None:
        if not 0 < max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 1..{MAX_PAYLOAD}")
        if window < INITIAL_LIMIT:
            raise ValueError(f"window must be at least {INITIAL_LIMIT}")
        self.window = window
        self.max_payload = max_payload
        # Sending: _unacked holds the bytes from offset `acked` on, sent or not.
        self._unacked = bytearray()
        self.acked = 0  # the peer has everything below
        self.sent = 0  # the next offset to send (acked <= sent)
        self.peer_limit = INITIAL_LIMIT  # what the peer lets us send up to, as it said last
        self._fin_wanted = False
        self.fin_acked = False
        # Receiving.
        self.received = 0  # everything below is in order (read or readable)
        self._readable = bytearray()
        self._early: dict[int, bytes] = {}  # out-of-order payloads, by offset
        self._early_bytes = 0
        self._fin_at: int | None = None  # where the peer's stream ends
        self.limit = window  # what we let the peer send up to
        self._ack_due = False

    # --- sending --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fin_wanted:
            raise RuntimeError("write after write_eof")
        self._unacked += data

    def write_eof(self) -> None:
        self._fin_wanted = True

    @property
    def buffered(self) -> int:
        """Bytes written and not yet acknowledged (the caller's back-pressure)."""
        return len(self._unacked)

    @property
    def unacked(self) -> int:
        """Bytes sent and not yet acknowledged (a carrier that freezes with these in flight
        must be replaced and the bytes sent again)."""
        return self.sent - self.acked

    @property
    def end(self) -> int:
        return self.acked + len(self._unacked)

    def pending(self) -> bool:
        """Whether `outgoing` has something to say (bytes the window lets out, a FIN, an
        acknowledgement)."""
        return self._ack_due or self._sendable() > 0 or self._fin_due()

    def _sendable(self) -> int:
        return max(0, min(self.end, self.peer_limit) - self.sent)

    def _fin_due(self) -> bool:
        # Once every byte before it is out (a FIN past the window waits for the window).
        return self._fin_wanted and not self.fin_acked and self.sent == self.end

    def rewind(self) -> None:
        """Send everything not acknowledged again (its carrier was lost)."""
        self.sent = self.acked

    def ack_now(self) -> None:
        """Put an acknowledgement in the next `outgoing` even without data."""
        self._ack_due = True

    def outgoing(self, budget: int, *, flags: int = 0) -> bytes:
        """Segments to send on a carrier now, at most `budget` bytes of them (headers
        included); b"" when there is nothing to send or no room. `flags` (PING, END, REWIND) go
        on the first segment; with flags a segment is sent even without data."""
        out = bytearray()
        while True:
            room = budget - len(out) - HEADER.size
            if room < 0:
                break
            size = min(self._sendable(), self.max_payload, room)
            fin_here = self._fin_wanted and self.sent + size == self.end and self.sent <= self.end
            if size <= 0 and not (fin_here and self._fin_due()):
                break
            start = self.sent - self.acked
            payload = bytes(self._unacked[start : start + size])
            flag = FIN if fin_here else 0
            out += encode_segment(flag, self.sent, self.ack, self.limit, payload)
            self.sent += size
            if fin_here:
                self.sent = self.end + 1  # the FIN counts as one byte past the end
                break
        if out:
            self._ack_due = False
            if flags:
                out[0] |= flags
        elif (self._ack_due or flags) and budget >= HEADER.size:
            out += encode_segment(flags, min(self.sent, self.end), self.ack, self.limit)
            self._ack_due = False
        return bytes(out)

    # --- receiving ------------------------------------------------------------------------

    def receive(self, segment: Segment) -> None:
        """A segment from any carrier, in any order, any number of times. ProtocolError for
        one the stream cannot have (beyond the window, past the end)."""
        self._on_ack(segment.ack, segment.limit)
        if segment.flags & PING:
            self._ack_due = True
        if segment.flags & REWIND:
            self.rewind()
        payload, offset = segment.payload, segment.offset
        if not payload and not segment.flags & FIN:
            return  # an acknowledgement: its offset says nothing
        end = offset + len(payload)
        if end > self.limit:
            raise ProtocolError("a segment beyond the window")
        if segment.flags & FIN:
            if self._fin_at is not None and self._fin_at != end:
                raise ProtocolError("the stream's end moved")
            self._fin_at = end
            self._ack_due = True
        if self._fin_at is not None and end > self._fin_at:
            raise ProtocolError("a segment past the stream's end")
        if payload:
            self._ack_due = True
            if end > self.received:
                if offset <= self.received:
                    self._take(payload[self.received - offset :])
                    self._fill()
                elif self._early_bytes + len(payload) <= self.window and len(
                    self._early.get(offset, b"")
                ) < len(payload):
                    # Kept for when the gap fills (beyond what the window holds: dropped, the
                    # peer sends it again).
                    self._early_bytes += len(payload) - len(self._early.get(offset, b""))
                    self._early[offset] = payload

    @property
    def ack(self) -> int:
        """What we acknowledge: every byte below, and the FIN as one more once reached."""
        if self._fin_at is not None and self.received == self._fin_at:
            return self.received + 1
        return self.received

    def _take(self, data: bytes) -> None:
        self._readable += data
        self.received += len(data)

    def _fill(self) -> None:
        """Take the out-of-order payloads the stream has now reached."""
        while self._early:
            progress = False
            for offset in sorted(self._early):
                if offset > self.received:
                    break
                payload = self._early.pop(offset)
                self._early_bytes -= len(payload)
                end = offset + len(payload)
                if end > self.received:
                    self._take(payload[self.received - offset :])
                progress = True
            if not progress:
                break

    def _on_ack(self, ack: int, limit: int) -> None:
        top = self.end + (1 if self._fin_wanted else 0)
        if ack > top:
            raise ProtocolError("an acknowledgement of bytes never sent")
        if ack > self.acked:
            fin = self._fin_wanted and ack == self.end + 1
            data_acked = min(ack, self.end) - self.acked
            del self._unacked[:data_acked]
            self.acked += data_acked
            if fin:
                self.fin_acked = True
            if self.sent < ack:
                self.sent = ack
        self.peer_limit = max(self.peer_limit, limit)

    def read(self, n: int = -1) -> bytes:
        """Bytes received in order, at most n (all with -1); b"" when none are ready."""
        if n < 0 or n >= len(self._readable):
            data = bytes(self._readable)
            self._readable.clear()
        else:
            data = bytes(self._readable[:n])
            del self._readable[:n]
        if data:
            consumed = self.received - len(self._readable)
            new_limit = consumed + self.window
            if new_limit - self.limit >= self.window // 2:
                self._ack_due = True  # the peer may be waiting for room
            self.limit = max(self.limit, new_limit)
        return data

    @property
    def readable(self) -> int:
        return len(self._readable)

    @property
    def at_eof(self) -> bool:
        """The peer's stream has ended and everything in it has been read."""
        return self._fin_at is not None and self.received == self._fin_at and not self._readable

    @property
    def finished(self) -> bool:
        """Both directions have ended and been acknowledged."""
        return self.at_eof and self.fin_acked
