"""Moving a probe's bytes after its handshake: the download of an `https://` target and the
freeze check (volume.py) of a `tls://` or `mtproto://` one, with what their silences mean.

A transfer that stops while the peer still owes bytes -- none for the prober's whole stall
time -- is a freeze (`stalled` during `read`). One whose time runs out sooner is not: the
bytes were still moving (a slow path, a loaded machine), and a download's rate, a freeze
check's second try (volume.freeze_verdict), decides instead. A silence counts only the time
the event loop could run (patience.py): on a machine that is losing time, the seconds the
loop lost are no silence of the route, and the transfer's time is its target's deadline,
stretched with the same measurements.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from transports import DialError, Failure, Op
from transports.base import classify_os_error
from transports.mtproto.framing import FramingError

from .blockpage import block_page as _block_page
from .blockpage import is_block_page as _is_block_page
from .mtproto import PqExchange
from .patience import Deadline, Patience
from .result import Step, TargetResult
from .volume import (
    FREEZE_WINDOW,
    FROZEN,
    MAX_MTPROTO_REQUESTS,
    TIMER_SLACK,
    UNSURE,
    NotHttp,
    ResponseCounter,
    freeze_verdict,
    requests_needed,
    unsure_detail,
)

if TYPE_CHECKING:
    from ..services import ProbeTarget

__all__ = ["MAX_BODY", "MIN_RATE_SAMPLE", "USER_AGENT", "Failed", "Transfers"]

MAX_BODY = 1 << 20  # read at most this much of a probe's response
MIN_RATE_SAMPLE = 32 * 1024  # bytes needed before a rate means anything
USER_AGENT = "detour-probe"


class Failed(Exception):
    """A probe step failed: `error` says how (the prober's verdict on the target)."""

    def __init__(self, error: DialError) -> None:
        self.error = error


class Transfers:
    """The prober's transfers (a mixin of probe.Prober): `stall` is the silence, seconds,
    that makes a freeze; `min_rate` the bytes per second under which a download is
    throttled (0: no floor)."""

    stall: float
    min_rate: float
    patience: Patience

    def _silence(self, last_byte: float, mark: float) -> float:
        """Seconds since `last_byte` (time.monotonic) less the loop time lost since then
        (`mark`: Patience.lost() at that byte)."""
        return max(0.0, time.monotonic() - last_byte - (self.patience.lost() - mark))

    async def _download(
        self,
        stream: Any,
        head: bytes,
        length: int | None,
        result: TargetResult,
        deadline: Deadline | float,
    ) -> None:
        """Read the body until it ends, or until the probe's time is nearly up (enough to
        measure a rate): a body that stops arriving is "stalled", one that crawls is
        "throttled"."""
        body = bytearray()
        wanted = min(MAX_BODY, length if length is not None else MAX_BODY)
        t0 = last_byte = time.monotonic()
        mark = self.patience.lost()
        stall = self.patience.silence(self.stall)
        ended = False
        while len(body) < wanted:
            remaining = _left(deadline)
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(stall, remaining)):
                    chunk = await stream.read(65536)
            except TimeoutError:
                silent = self._silence(last_byte, mark)
                if silent < stall - TIMER_SLACK and _left(deadline) > 0:
                    continue  # the loop lost time: the silence is not whole yet
                break
            except (OSError, EOFError) as exc:
                raise Failed(classify_os_error(exc, Op.READ)) from None
            if not chunk:
                ended = True
                break
            body += chunk
            last_byte, mark = time.monotonic(), self.patience.lost()
            if len(body) <= 4096 and _is_block_page(head + body):
                raise Failed(_block_page())
        now = time.monotonic()
        elapsed = now - t0
        result.received = len(body)
        complete = len(body) >= wanted
        result.steps.append(Step("download", elapsed * 1000, complete))
        if _is_block_page(head + body[:4096]):
            raise Failed(_block_page())
        if ended and length is not None and not complete:
            raise Failed(
                DialError(Failure.EOF, Op.READ, f"body ended after {len(body)} of {length} bytes")
            )
        silent = self._silence(last_byte, mark)
        if not complete and not ended and silent >= stall - TIMER_SLACK:
            # The body still owed bytes and none came for the whole stall time. Out of time
            # sooner -- the last byte less than that before -- is a transfer that was still
            # moving (slowly, on a loaded machine or path): its rate decides, not a freeze.
            raise Failed(DialError(Failure.STALLED, Op.READ, f"stopped after {len(body)} bytes"))
        if elapsed > 0 and (len(body) >= MIN_RATE_SAMPLE or not complete):
            rate = len(body) / elapsed
            result.rate_kbps = rate / 1000
            if self.min_rate and rate < self.min_rate:
                raise Failed(DialError(Failure.THROTTLED, Op.READ, f"{rate / 1000:.1f} KB/s"))

    async def _volume(
        self, target: ProbeTarget, stream: Any, result: TargetResult, deadline: Deadline | float
    ) -> None:
        """After a `tls://` probe's handshake: pages from the server until FREEZE_WINDOW bytes
        came back (volume.py). Bytes that stop while answers are still owed are a freeze
        ("stalled" during "read"); a server that answers no HTTP, or closes, or whose answers
        are too small to reach the window leaves the check inconclusive
        (`freeze_checked` false), not failed."""
        host = target.endpoint.host
        request = f"GET {target.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        counter = ResponseCounter()
        t0 = time.monotonic()
        result.freeze_checked = False
        stream.write((request + "\r\n").encode())
        owed = 1
        try:
            ended = await self._read_answers(stream, counter, owed, result, deadline)
            more = 0 if ended else requests_needed(counter.received, counter.first_size)
            if more:
                batch = (request + "\r\n").encode() * (more - 1)
                batch += (request + "Connection: close\r\n\r\n").encode()
                stream.write(batch)
                owed += more
                await self._read_answers(stream, counter, owed, result, deadline)
        except NotHttp:
            pass  # not a web server: nothing to ask it for
        except Failed:
            result.steps.append(Step("volume", (time.monotonic() - t0) * 1000, False))
            raise
        result.received = counter.received
        result.steps.append(Step("volume", (time.monotonic() - t0) * 1000, True))
        result.freeze_checked = counter.received >= FREEZE_WINDOW

    async def _volume_mtproto(
        self, exchange: PqExchange, result: TargetResult, deadline: Deadline | float
    ) -> None:
        """After an `mtproto://` probe's first exchange: more req_pq_multi in one write, until
        the DC's answers (about 90 bytes each) reach FREEZE_WINDOW -- the check for a route
        whose only probes are DCs (a `tgws` route, whose web endpoint may be frozen)."""
        t0 = time.monotonic()
        result.freeze_checked = False
        more = requests_needed(exchange.received, exchange.first_size, MAX_MTPROTO_REQUESTS)
        try:
            if more:
                exchange.stream.write(exchange.more(more))
                await self._read_answers(
                    exchange.stream, exchange, exchange.complete + more, result, deadline
                )
        except FramingError:
            pass  # not MTProto any more: nothing to conclude
        except Failed:
            result.steps.append(Step("volume", (time.monotonic() - t0) * 1000, False))
            raise
        result.received = exchange.received
        result.steps.append(Step("volume", (time.monotonic() - t0) * 1000, True))
        result.freeze_checked = exchange.received >= FREEZE_WINDOW

    async def _read_answers(
        self,
        stream: Any,
        counter: ResponseCounter | PqExchange,
        owed: int,
        result: TargetResult,
        deadline: Deadline | float,
    ) -> bool:
        """Read until `owed` answers are whole, the window is full or the server closes (then
        True). Raises STALLED when the bytes stop while answers are still owed; out of time
        while they still came, the check is unsure (`freeze_unsure`, volume.freeze_verdict)."""
        last_byte = time.monotonic()
        mark = self.patience.lost()
        stall = self.patience.silence(self.stall)
        while counter.complete < owed and counter.received < FREEZE_WINDOW:
            remaining = _left(deadline)
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(min(stall, remaining)):
                    chunk = await stream.read(65536)
            except TimeoutError:
                silent = self._silence(last_byte, mark)
                if silent < stall - TIMER_SLACK and _left(deadline) > 0:
                    continue  # the loop lost time: the silence is not whole yet
                verdict = freeze_verdict(counter.received, silent, stall)
                if verdict is not FROZEN:
                    if verdict is UNSURE:
                        result.freeze_unsure = unsure_detail(counter.received, silent)
                    return True
                result.received = counter.received
                raise Failed(
                    DialError(
                        Failure.STALLED,
                        Op.READ,
                        f"stopped after {counter.received} bytes of answers (of {FREEZE_WINDOW})",
                    )
                ) from None
            except (OSError, EOFError) as exc:
                result.received = counter.received
                raise Failed(classify_os_error(exc, Op.READ)) from None
            if not chunk:
                return True
            last_byte, mark = time.monotonic(), self.patience.lost()
            if counter.received < 4096 and _is_block_page(chunk):
                raise Failed(_block_page())
            counter.feed(chunk)
            result.received = counter.received
        return counter.received >= FREEZE_WINDOW


def _left(deadline: Deadline | float) -> float:
    """Seconds left for a transfer before its target's deadline (time.monotonic; a
    Deadline's end as measured now), less a quarter second to report before the timeout."""
    end = deadline if isinstance(deadline, (int, float)) else deadline.end
    return end - 0.25 - time.monotonic()
