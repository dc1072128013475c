"""Whether a live client connection is still making progress (sans-IO: bytes and times in,
a verdict out). docs/routing.md "Frozen connections".

The 2025-2026 freeze lets a flow start, then drops everything the server sends after about
16 KB: no reset, no close. Probes see it (probe/volume.py), but only on their own targets and
only when they run; an application's connection sees it first. A connection that stops
making progress *while its peer still has data to send* counts against its route
(Router.record_stall), so the connections after it take another one.

"Still has data to send" must be known, not guessed, or every idle connection would count:
a chat app's long poll (a request the server answers minutes later), an idle WebSocket, an
HTTP keep-alive connection between requests, a large upload the server answers only at its
end. Two cases are certain enough:

- **Mid-record** (`frozen_after_<n>KB`): the server's bytes are TLS records (the first five
  bytes it sent were a TLS record header) and they stopped *inside* a record -- the header
  announced more bytes than came -- for `timeout` seconds. A healthy server never stops
  halfway through a record it has started, and an idle TLS connection always rests at a
  record boundary, so long polls, idle WebSockets and keep-alives never trip it.
- **Unanswered** (`no_answer_after_<n>KB`, not TLS): the client sent data, nothing came back
  for `timeout` seconds, and the client has sent again at least `RESEND_GAP` seconds later
  while still unanswered, with at most `UPLOAD_LIMIT` bytes unanswered in all. A protocol
  whose client repeats itself when unanswered (MTProto's acks and pings, a chat protocol's
  keepalive) shows the server is not getting through; a long poll sends one request and
  waits (one write), an upload sends far more than `UPLOAD_LIMIT`.

A TLS connection whose server stops exactly at a record boundary, or a non-TLS one whose
client waits silently, is not seen: probes remain the check for those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transports import Failure, Op

from ..events import DialFailed

if TYPE_CHECKING:
    from ..services import Service
    from .router import Route, Router

log = logging.getLogger("detour.routing")

__all__ = [
    "RESEND_GAP",
    "UPLOAD_LIMIT",
    "ProgressWatch",
    "Stall",
    "TlsRecords",
    "record_stall",
]

# The least time between the first unanswered write and a later one for "unanswered".
RESEND_GAP = 1.0
# More unanswered client bytes than this is an upload, which servers answer at its end.
UPLOAD_LIMIT = 64 * 1024

_TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec .. application_data
_HEADER = 5


class TlsRecords:
    """Where a byte stream stands against TLS record boundaries. `tls` is None until five
    bytes have come, then whether they were a TLS record header; False for good once a
    header does not look like one (the stream is not TLS, or not any more)."""

    def __init__(self) -> None:
        self.tls: bool | None = None
        self._header = bytearray()  # a header's first bytes, when a chunk ended inside one
        self._left = 0  # bytes of the current record's body still to come

    @property
    def mid_record(self) -> bool:
        """Inside a record (or its header): the sender owes more bytes."""
        return bool(self.tls) and (self._left > 0 or bool(self._header))

    def feed(self, data: bytes | memoryview) -> None:
        if self.tls is False:
            return
        view = memoryview(data)
        at, end = 0, len(view)
        while at < end:
            if self._left:
                step = min(self._left, end - at)
                self._left -= step
                at += step
                continue
            need = _HEADER - len(self._header)
            self._header += view[at : at + need]
            at += min(need, end - at)
            if len(self._header) < _HEADER:
                return
            header, self._header = bytes(self._header), bytearray()
            if header[0] not in _TLS_CONTENT_TYPES or header[1] != 3:
                self.tls = False
                return
            self.tls = True
            self._left = int.from_bytes(header[3:5], "big")


@dataclass(frozen=True, slots=True)
class Stall:
    diagnosis: str  # frozen_after_16KB, no_answer_after_0KB
    detail: str  # in words, for logs and the details view
    received: int  # bytes from the server before it stopped


class ProgressWatch:
    """One connection's progress. Feed it what moves (`sent`: client to server, `received`:
    server to client) and ask `check` now and then; it says `Stall` once, the first time the
    connection is seen stalled, and None otherwise."""

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout
        self.records = TlsRecords()
        self.received_bytes = 0
        self._last_down = now  # when the server's last bytes came (or the start)
        self._unanswered_since: float | None = None  # first client write since then
        self._unanswered_bytes = 0
        self._resent = False  # the client wrote again, RESEND_GAP later, still unanswered
        self.stalled: Stall | None = None
        self.closed = False  # the connection was closed for its stall ([probe] stall_close)

    def sent(self, size: int, now: float) -> None:
        if size <= 0:
            return
        if self._unanswered_since is None:
            self._unanswered_since = now
        elif now - self._unanswered_since >= RESEND_GAP:
            self._resent = True
        self._unanswered_bytes += size

    def received(self, data: bytes | memoryview, now: float) -> None:
        if not data:
            return
        self.received_bytes += len(data)
        self.records.feed(data)
        self._last_down = now
        self._unanswered_since = None
        self._unanswered_bytes = 0
        self._resent = False

    def check(self, now: float) -> Stall | None:
        """A Stall the first time the connection is seen stalled; None otherwise."""
        if self.stalled is not None:
            return None
        silent = now - self._last_down
        if silent < self.timeout:
            return None
        kb = self.received_bytes // 1024
        if self.records.mid_record:
            self.stalled = Stall(
                f"frozen_after_{kb}KB",
                f"the server's bytes stopped inside a TLS record after {self.received_bytes} "
                f"bytes ({silent:.0f}s without a byte)",
                self.received_bytes,
            )
            return self.stalled
        if (
            self.records.tls is not True
            and self._unanswered_since is not None
            and now - self._unanswered_since >= self.timeout
            and self._resent
            and self._unanswered_bytes <= UPLOAD_LIMIT
        ):
            self.stalled = Stall(
                f"no_answer_after_{kb}KB",
                f"no answer for {now - self._unanswered_since:.0f}s to {self._unanswered_bytes} "
                f"bytes the client sent and sent again, after {self.received_bytes} bytes",
                self.received_bytes,
            )
            return self.stalled
        return None


def record_stall(
    router: Router, service: Service | None, route: Route, diagnosis: str, detail: str
) -> None:
    """A live connection through `route` froze: the route fails for `service` at once, so the
    next connections take another route, and the router's observers hear it is failing (a
    re-probe)."""
    name = service.name if service is not None else None
    if router.tally is not None:
        router.tally.dial_failed(name, route.name, Failure.STALLED.value, Op.READ.value)
    if router.events is not None:
        router.events.publish(DialFailed(name, route.name, Failure.STALLED.value, Op.READ.value))
    log.warning(
        "%s via %s: a connection stalled (%s): %s", name or "-", route.name, diagnosis, detail
    )
    key = service.name if service is not None else ""
    if router.health.record_stall(key, route.name, diagnosis, detail):
        router.note_health_change(f"{route.name} froze a connection ({diagnosis})")
        for observer in list(router._observers):
            observer.route_failing(service, route.name)
