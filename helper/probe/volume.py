"""Enough bytes to see a freeze: the part of a probe that makes the server send more than a
censor lets through before it freezes a flow (the 2025-2026 technique: flows to foreign
hosting carry about 16 KB from the server, then nothing -- no reset, no close).

A handshake fits under that cap, so a probe that stops after it calls a frozen route working.
After the TLS handshake of a `tls://` probe the prober asks the server for pages until
`FREEZE_WINDOW` bytes have come back: one `GET`, then as many more as that answer's size says
are needed, pipelined in one write (HTTP/1.1 servers answer pipelined requests in order; the
last asks the server to close). Any HTTPS server answers a `GET /` without an account --
with a page, a redirect or a 404 -- so this works with the services' real endpoints.

`ResponseCounter` is the sans-IO part: it counts whole HTTP/1.1 responses in the bytes it is
fed (Content-Length, chunked, or until the close), so the prober knows whether the server
still owes it bytes when the bytes stop coming -- a freeze -- or has answered everything.
`freeze_verdict` decides what a read that stopped with answers still owed means: a freeze,
or, when the probe's time ran out while bytes were still coming (a loaded machine or a slow
path), "unsure" -- which the prober checks once more with a longer deadline, and which never
counts as a pass of the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transports import Failure

if TYPE_CHECKING:
    from .result import TargetResult

__all__ = [
    "FREEZE_WINDOW",
    "FROZEN",
    "MAX_MTPROTO_REQUESTS",
    "MAX_REQUESTS",
    "PASSED",
    "UNSURE",
    "NotHttp",
    "ResponseCounter",
    "freeze_verdict",
    "requests_needed",
    "settle",
    "unsure_detail",
]

# Bytes from the server after the TLS handshake that a probe asks for. Freezes seen in the
# wild cut at 12-20 KB (up to 64 KB on some networks), counted on the wire with the handshake
# (a few KB of certificates): 24 KiB of answers passes the typical cap with room.
FREEZE_WINDOW = 24 * 1024
# At most this many requests in the pipelined batch (a server whose answers are tiny would
# otherwise be asked thousands of times; the check is then inconclusive).
MAX_REQUESTS = 200
# req_pq_multi answers are about 90 bytes: a DC needs more requests to fill the window.
MAX_MTPROTO_REQUESTS = 300
MAX_HEAD = 65536


# What a freeze check concludes (freeze_verdict).
PASSED = "passed"  # the window's bytes came back
FROZEN = "frozen"  # the bytes stopped while answers were owed: "stalled" during "read"
UNSURE = "unsure"  # time ran out before the silence that makes a freeze: neither
TIMER_SLACK = 0.01  # seconds: a timer may fire this much before the silence it waits for


def freeze_verdict(received: int, silent: float, quiet: float) -> str:
    """What a freeze check whose read ended -- its time ran out, or no byte came for a
    while -- with answers still owed concludes, from the bytes of answers `received`, the
    seconds `silent` since the last byte (or since the request, before the first) and the
    silence `quiet` that makes a freeze (the prober's stall time): PASSED once the window is
    full, FROZEN after `quiet` seconds without a byte, otherwise UNSURE (the probe's time ran
    out before that silence was seen: a loaded machine or a slow path can look like that --
    the first answer late, or bytes still coming -- and so can a freeze that struck just
    before the end)."""
    if received >= FREEZE_WINDOW:
        return PASSED
    return FROZEN if silent >= quiet - TIMER_SLACK else UNSURE


def unsure_detail(received: int, silent: float) -> str:
    """The words of an UNSURE freeze check, for the probe's diagnosis."""
    return (
        f"freeze check unsure: out of time after {received} of {FREEZE_WINDOW} bytes of "
        f"answers, the last {silent:.1f}s before"
    )


def settle(first: TargetResult, again: TargetResult) -> TargetResult:
    """Which of a target's two probes stands when the first passed with its freeze check
    UNSURE and `again` checked once more with more time: `again` when it passed (sure, or
    still unsure) or saw the freeze (STALLED); otherwise -- it failed for another reason, a
    timeout on a loaded machine most often -- the first, still unsure: a second connection
    that failed says nothing about a freeze, and the first did carry the service."""
    return again if again.ok or again.failure is Failure.STALLED else first


class NotHttp(ValueError):
    """The bytes are not HTTP/1.x responses."""


def requests_needed(received: int, first_response: int, most: int = MAX_REQUESTS) -> int:
    """How many more requests (at most `most`) bring the answers to FREEZE_WINDOW bytes,
    given the bytes received so far and the size of one answer."""
    if received >= FREEZE_WINDOW or first_response <= 0:
        return 0
    missing = FREEZE_WINDOW - received
    return min(most, -(-missing // first_response))


class ResponseCounter:
    """Counts complete HTTP/1.1 responses in a byte stream. `feed` raises NotHttp for bytes
    that are not HTTP/1.x responses; `until_close` is True while a response without a length
    runs to the connection's end (then no later response can follow)."""

    def __init__(self) -> None:
        self.complete = 0
        self.received = 0
        self.first_size = 0  # bytes of the first whole response
        self.until_close = False
        self._buffer = bytearray()
        self._state = "head"
        self._left = 0  # body bytes (or chunk bytes) still to come
        self._current = 0  # bytes of the response being read

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self._current += len(data)
        if self.until_close:
            return
        self._buffer += data
        while self._step():
            pass

    def _finish(self) -> None:
        self.complete += 1
        extra = len(self._buffer)  # bytes of the next response, already here
        if self.complete == 1:
            self.first_size = self._current - extra
        self._current = extra
        self._state = "head"

    def _step(self) -> bool:
        buffer = self._buffer
        if self._state == "head":
            if len(buffer) >= 5 and not buffer.startswith(b"HTTP/"):
                raise NotHttp("the answer is not HTTP")
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise NotHttp("an HTTP head without an end")
                return False
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            status, length, chunked = _parse_head(head)
            if 100 <= status < 200 or status in (204, 304):
                if 100 <= status < 200 and status != 101:
                    self._current = len(buffer)  # an interim answer: the real one follows
                    return True
                self._finish()
                return True
            if chunked:
                self._state = "chunk-size"
            elif length is not None:
                self._state, self._left = "body", length
                if length == 0:
                    self._finish()
            else:
                self.until_close = True
                buffer.clear()
                return False
            return True
        if self._state == "body":
            taken = min(self._left, len(buffer))
            del buffer[:taken]
            self._left -= taken
            if self._left == 0:
                self._finish()
                return True
            return False
        if self._state == "chunk-size":
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise NotHttp("a chunk size line without an end")
                return False
            line = bytes(buffer[:end]).split(b";", 1)[0].strip()
            del buffer[: end + 2]
            try:
                size = int(line, 16)
            except ValueError:
                raise NotHttp("a chunk size that is no number") from None
            if size < 0:
                raise NotHttp("a negative chunk size")
            if size == 0:
                self._state = "trailer"
            else:
                self._state, self._left = "chunk-data", size + 2  # the data and its CRLF
            return True
        if self._state == "chunk-data":
            taken = min(self._left, len(buffer))
            del buffer[:taken]
            self._left -= taken
            if self._left == 0:
                self._state = "chunk-size"
                return True
            return False
        # trailer: header lines until an empty one
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise NotHttp("a trailer without an end")
            return False
        del buffer[: end + 2]
        if end == 0:
            self._finish()
        return True


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise NotHttp("not an HTTP/1.x status line")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if not value.isdigit():
                raise NotHttp("a Content-Length that is no number")
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return status, length, chunked
