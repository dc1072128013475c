"""Which way a `front:` dialer carries its tunnels, and the capped mode's dialing.

    carrier=long     one long-lived WebSocket per tunnel (multiplexed): the fastest, and the
                     worst case when the censor freezes flows after ~16 KB
    carrier=capped   many short connections, none over the byte budget (capped.py)
    carrier=auto     (the default) long, until a long tunnel freezes: then capped, for
                     STICKY seconds, then long is tried again

A long tunnel freezes when the relay stops answering (not even a PING) while it has carried
less than FREEZE_SUSPECT bytes from the front: the flow was frozen, not closed. How long a
PING may go unanswered follows what the relay's answers have taken (the WebSocket upgrade's,
earlier PINGs'): ANSWER_FACTOR x the slowest of the last few, at least SILENT and at most the
dialer's handshake timeout, so a slow relay or a long path is not taken for a freeze. The dialer
says so in its log and `frozen_after` (bytes), which the probe's diagnosis can name, and the
connections that were on it fail; the next ones go capped. A relay that does not know the
capped mode answers its upgrade without the subprotocol: the dialer stays long (and asks
again after UNSUPPORTED_RETRY).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from ..base import DialError, Failure, Op, Stream
from ..tls import tls_connect
from ..websocket import websocket_connect
from ..wire import NeedMore, ProtocolError
from .accesskey import access_token
from .capped import (
    CARRIER_PROTOCOL,
    CARRIER_PROTOCOL_EARLY,
    DEFAULT_BUDGET,
    HANDSHAKES,
    HOLD,
    MARGIN,
    MARGIN_FLOOR,
    MEASURED,
    MIN_BUDGET,
    OK,
    REFUSED,
    REMEASURE,
    SLACK,
    UNKNOWN,
    CappedTunnel,
    CarrierLimit,
    CarrierLink,
    Counted,
    EarlyHelloFailed,
    encode_confirm,
    encode_hello,
    parse_welcome,
)
from .frames import PING
from .mux import ALPN, MuxSession

if TYPE_CHECKING:
    from .client import FrontDialer

__all__ = ["MODES", "CarrierMode", "CarrierUnsupported", "adapt_to_freeze"]

log = logging.getLogger("detour.transports.front")

MODES = ("auto", "long", "capped")
STICKY = 3600.0  # after a freeze, capped this long before long is tried again
UNSUPPORTED_RETRY = 600.0
FREEZE_SUSPECT = 64 * 1024  # a long tunnel that stops before this many bytes froze
WATCH_EVERY = 1.0
SILENT = 4.0  # a long tunnel with connections, silent this long, is asked (PING)
ANSWER_FACTOR = 4.0  # a PING unanswered this many times the slowest answer seen: frozen
ANSWERS_KEPT = 8  # the relay's answer times remembered
RECENT = 30.0  # a freeze noted this recently answers a probe's confirm_freeze()
FILLED = 512  # a carrier that received this close to its line was filled by the relay


class CarrierUnsupported(DialError):
    def __init__(self, detail: str) -> None:
        super().__init__(Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, detail)


class CarrierMode:
    """A FrontDialer's choice of carrier, and the capped mode's carriers."""

    def __init__(self, dialer: FrontDialer, mode: str = "auto", budget: int = DEFAULT_BUDGET):
        if mode not in MODES:
            raise ValueError(f"carrier={mode!r}: one of {', '.join(MODES)}")
        if budget < MIN_BUDGET:
            raise ValueError(f"budget={budget}: at least {MIN_BUDGET} bytes")
        self.dialer = dialer
        self.mode = mode
        self.budget = budget
        self.frozen_after: int | None = None  # bytes a long tunnel carried before it froze
        self.froze = asyncio.Event()  # set with frozen_after
        self._capped_until = 0.0
        self._unsupported_until = 0.0
        self._tls_session: Any = None
        self._handshaking = asyncio.Semaphore(HANDSHAKES)
        self.resumed = 0  # carriers whose TLS with the front was resumed (no certificates)
        # The early hello (capped.py): whether the relay takes it (None: not known yet), and
        # what the front sent on recent carriers between the TLS handshake and its answer's
        # end (tickets, the answer, their records), with the answers' head sizes.
        self.relay_early: bool | None = None
        self._after_tls: deque[int] = deque(maxlen=ANSWERS_KEPT)
        self._heads: deque[int] = deque(maxlen=ANSWERS_KEPT)
        self._early_left = 0  # early hellos before the answer is measured again
        self._early_off_until = 0.0  # after an answer grew by more than HOLD
        self.offer_early = True  # False: offer `detour-carrier/1` only (as before /2)
        self.early_carriers = 0
        # How far past the line of no margin (budget less margin) the carriers the relay
        # filled went: the front's framing beyond the relay's own count (capped.py, MARGIN).
        self._framing: deque[int] = deque(maxlen=4 * ANSWERS_KEPT)
        self.timings: deque[dict[str, float]] = deque(maxlen=256)  # the last carriers' steps
        self._watchers: set[asyncio.Task[None]] = set()
        self._answers: deque[float] = deque(maxlen=ANSWERS_KEPT)  # seconds, the relay's
        self._watched: dict[MuxSession, Counted] = {}  # long tunnels, each with its count
        self._froze_at: float | None = None

    def note_answer(self, seconds: float) -> None:
        """The relay answered a request through the front in `seconds` (an upgrade, a PING)."""
        self._answers.append(max(0.0, seconds))

    def answer_deadline(self) -> float:
        """How long a silent long tunnel's PING may go unanswered before it counts as frozen."""
        slowest = max(self._answers, default=0.0)
        ceiling = max(SILENT, self.dialer.handshake_timeout)
        return min(ceiling, max(SILENT, ANSWER_FACTOR * slowest))

    @property
    def counting(self) -> bool:
        """Whether long tunnels are watched for a freeze (auto mode)."""
        return self.mode == "auto"

    def capped_now(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop.time() < self._unsupported_until:
            return False
        return self.mode == "capped" or (self.mode == "auto" and loop.time() < self._capped_until)

    # --- the capped mode --------------------------------------------------------------------

    async def open_session(self, keepalive: float) -> MuxSession | None:
        """A multiplexed tunnel over a capped session; None when the relay has no capped
        mode (the caller then opens a long one)."""
        dialer = self.dialer
        tunnel = CappedTunnel(
            self._carrier,
            retired=self._retired,
            early_failed=self.early_hello_failed,
            budget=self.budget,
            deadline=max(2.0, min(dialer.handshake_timeout, 4.0)),
            name=f"front {dialer.key.front}",
        )
        try:
            stream = await tunnel.start()
        except CarrierUnsupported:
            self._unsupported_until = asyncio.get_running_loop().time() + UNSUPPORTED_RETRY
            if self.mode == "capped":
                log.warning(
                    "front %s: the relay has no capped mode (carrier=capped): long tunnels",
                    dialer.key.front,
                )
            return None
        try:
            inner = await tls_connect(
                stream, dialer._inner_context(multiplex=True), None,
                timeout=dialer.handshake_timeout,
            )  # fmt: skip
        except DialError as exc:
            tunnel.close()
            raise DialError(exc.failure, Op.PROXY_HANDSHAKE, f"relay: {exc.detail}") from None
        dialer._check_pin(inner)
        if inner.get_extra_info("ssl_object").selected_alpn_protocol() != ALPN:
            inner.close()
            tunnel.close()
            return None
        log.info("front %s: a capped tunnel (%d-byte carriers)", dialer.key.front, self.budget)
        session = MuxSession(inner, keepalive=keepalive, name=f"front {dialer.key.front} capped")
        session.capped = tunnel  # type: ignore[attr-defined]
        return session

    def margin(self) -> int:
        """What an allowance keeps back for the front's framing: MARGIN until MEASURED
        carriers the relay filled were seen, then what the most framing seen on the recent
        ones needed, plus MARGIN_FLOOR (never more than MARGIN)."""
        if len(self._framing) < MEASURED:
            return MARGIN
        return max(MARGIN_FLOOR, min(MARGIN, max(self._framing) + MARGIN_FLOOR))

    def _retired(self, link: CarrierLink) -> None:
        """A carrier both sides ended: if the relay filled it (within what an END and a last
        segment leave), what it received against the line of no margin."""
        line = link.budget - link.margin
        received = link.counted.received
        if received >= line - FILLED:
            self._framing.append(received - line)

    def _early_allowance(self, tls_bytes: int, margin: int | None = None) -> int | None:
        """The provisional allowance of an early hello after a TLS handshake of `tls_bytes`
        (capped.py), or None when this carrier is to measure the front's answer (the hello
        after it): the relay's support not known yet, no answer measured, or one grew."""
        if not self.relay_early or not self._after_tls or self._early_left <= 0:
            return None
        if asyncio.get_running_loop().time() < self._early_off_until:
            return None
        margin = self.margin() if margin is None else margin
        allowance = self.budget - tls_bytes - max(self._after_tls) - SLACK - margin - HOLD
        return allowance if allowance >= MIN_BUDGET // 4 else None

    async def _carrier(self, session_id: bytes, new: bool) -> CarrierLink:
        dialer = self.dialer
        key = dialer.key
        loop = asyncio.get_running_loop()
        began = loop.time()
        timings: dict[str, float] = {}
        try:
            raw = await dialer.inner.dial(key.address)
        except DialError as exc:
            raise DialError(exc.failure, exc.op, f"front {key.address}: {exc.detail}") from None
        timings["tcp"] = loop.time() - began
        counted = Counted(raw)
        timeout = dialer.handshake_timeout
        early: int | None = None
        try:
            async with asyncio.timeout(timeout):
                # At most HANDSHAKES TLS handshakes with the front under way at once; the
                # carriers' upgrades and hellos, after them, overlap freely.
                async with self._handshaking:
                    timings["tls_turn"] = loop.time() - began
                    outer = await tls_connect(
                        counted, dialer.outer_tls, key.front, timeout=timeout,
                        session=self._tls_session,
                    )  # fmt: skip
                timings["tls"] = loop.time() - began
                tls_bytes = counted.received
                margin = self.margin()
                early = self._early_allowance(tls_bytes, margin)
                hello = None
                if early is not None:
                    hello = encode_hello(session_id, new=new, allowance=early, early=True)
                ws = await websocket_connect(
                    outer,
                    key.host,
                    key.path,
                    headers=dialer._headers(access_token(key)),
                    protocols=self._offer(early is not None),
                    timeout=timeout,
                    first_message=hello,
                )
                timings["upgrade"] = loop.time() - began
                if early is not None:
                    allowance = self._confirm(ws, early)
                else:
                    allowance = self._measure(ws, counted, tls_bytes, margin)
                    ws.write(encode_hello(session_id, new=new, allowance=allowance))
                status, rest = await _read_welcome(ws)
                timings["welcome"] = loop.time() - began
        except TimeoutError:
            counted.abort()
            raise self._failed(
                early,
                DialError(
                    Failure.TIMEOUT,
                    Op.PROXY_HANDSHAKE,
                    f"a carrier through {key.front} was not open within {timeout:g}s",
                ),
            ) from None
        except DialError as exc:
            counted.abort()
            raise self._failed(early, exc) from None
        except ProtocolError as exc:
            counted.abort()
            error = DialError(Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, f"relay: {exc}")
            raise self._failed(early, error) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            counted.abort()
            if early is not None:
                self.relay_early = None  # the relay behind the front may have changed: ask
            raise self._failed(early, dialer._broken(exc)) from None
        if status != OK:
            ws.abort()
            if status == REFUSED and not new:
                raise CarrierLimit("the relay refused one more carrier (its limit per session)")
            said = "does not know this session" if status == UNKNOWN else "refused the session"
            raise DialError(Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, f"the relay {said}")
        if rest:
            ws.unread(rest)
        ssl_object = outer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.resumed += ssl_object.session_reused
            timings["resumed"] = float(ssl_object.session_reused)
            # Read once: the ssl module copies the session (certificates and all) each time.
            session = ssl_object.session
            if session is not None:
                self._tls_session = session
        link = CarrierLink(ws, counted, allowance, self.budget)
        link.margin = margin
        link.early = early is not None
        self.early_carriers += link.early
        link.timings = timings
        self.timings.append(timings)
        return link

    def _failed(self, early: int | None, error: DialError) -> DialError:
        """What a carrier that did not open raises: EarlyHelloFailed for one whose hello
        went with the upgrade (the tunnel then calls early_hello_failed, unless it is
        closing: carriers still opening then fail as the relay ends the session)."""
        if early is None or isinstance(error, CarrierUnsupported):
            return error
        return EarlyHelloFailed(error)

    def early_hello_failed(self, error: DialError) -> None:
        """A carrier whose hello went with the upgrade did not open while its tunnel was in
        use: perhaps the front does not pass on what comes before its answer. Hellos after
        the answer for a while (such a front costs a carrier every UNSUPPORTED_RETRY s)."""
        self._early_off_until = asyncio.get_running_loop().time() + UNSUPPORTED_RETRY
        log.info(
            "front %s: a carrier with its hello sent with the upgrade did not open (%s): "
            "hellos after the answer for %.0f s",
            self.dialer.key.front, error, UNSUPPORTED_RETRY,
        )  # fmt: skip

    def _offer(self, early: bool) -> list[str]:
        if early:
            return [CARRIER_PROTOCOL_EARLY]
        if not self.offer_early:
            return [CARRIER_PROTOCOL]
        return [CARRIER_PROTOCOL_EARLY, CARRIER_PROTOCOL]

    def _measure(self, ws: Any, counted: Counted, tls_bytes: int, margin: int = MARGIN) -> int:
        """A carrier with its hello after the answer: what the front sent is known exactly
        (the relay has sent nothing yet). Noted for the early hellos of the next carriers."""
        if ws.subprotocol not in (CARRIER_PROTOCOL, CARRIER_PROTOCOL_EARLY):
            ws.abort()
            raise CarrierUnsupported("the relay has no capped mode")
        self.relay_early = ws.subprotocol == CARRIER_PROTOCOL_EARLY
        allowance = self.budget - counted.received - margin
        if allowance < MIN_BUDGET // 4:
            ws.abort()
            raise DialError(
                Failure.PROXY_PROTOCOL_ERROR,
                Op.PROXY_HANDSHAKE,
                f"the front's handshake took {counted.received} of the {self.budget}-byte "
                "budget (carrier budget too small)",
            )
        self._after_tls.append(counted.received - tls_bytes)
        self._heads.append(ws.answer_size)
        self._early_left = REMEASURE
        return allowance

    def _confirm(self, ws: Any, early: int) -> int:
        """An early hello's carrier, its answer in: the allowance for the answer that came
        (the confirm, sent now). An answer larger than the largest seen takes its growth off,
        and the next carrier measures again."""
        if ws.subprotocol != CARRIER_PROTOCOL_EARLY:
            ws.abort()
            self.relay_early = None  # another relay behind the front: the next one asks
            raise DialError(
                Failure.PROXY_PROTOCOL_ERROR,
                Op.PROXY_HANDSHAKE,
                "the relay did not take the early hello (it changed?): asking again",
            )
        self._early_left -= 1
        growth = ws.answer_size - max(self._heads, default=0)
        if growth > HOLD:
            # The relay may have sent more than this carrier should carry: no early hellos
            # through this front for a while (its answers are not steady enough).
            log.warning(
                "front %s: its answer grew by %d bytes, more than the %d an early hello "
                "allows for: hellos after the answer for %.0f s",
                self.dialer.key.front, growth, HOLD, UNSUPPORTED_RETRY,
            )  # fmt: skip
            self._early_off_until = asyncio.get_running_loop().time() + UNSUPPORTED_RETRY
        if growth > 0:
            log.info(
                "front %s: its answer grew by %d bytes: measured again on the next carrier",
                self.dialer.key.front, growth,
            )  # fmt: skip
            self._early_left = 0
        allowance = early + HOLD - max(0, growth)
        ws.write(encode_confirm(allowance))
        return allowance

    # --- watching long tunnels (auto) -------------------------------------------------------

    def watch_long(self, session: MuxSession, tunnel: Stream) -> None:
        counted = _find_counted(tunnel)
        if counted is None:
            return
        task = asyncio.ensure_future(self._watch(session, counted))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, session: MuxSession, counted: Counted) -> None:
        loop = asyncio.get_running_loop()
        self._watched[session] = counted
        try:
            while session.alive and counted.received < FREEZE_SUSPECT:
                await asyncio.sleep(WATCH_EVERY)
                if loop.time() - session.last_heard < SILENT:
                    continue  # (a tunnel whose connections gave up on the silence is asked too)
                if await self._frozen(session, counted):
                    return
        finally:
            self._watched.pop(session, None)

    async def _frozen(self, session: MuxSession, counted: Counted) -> bool:
        """Ask the relay (PING); no answer within the deadline is a freeze: noted, and the
        tunnel closed."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        before = counted.received
        deadline = self.answer_deadline()
        session.send(PING, 0, os.urandom(8))
        while loop.time() - asked < deadline and session.alive:
            await asyncio.sleep(min(0.2, deadline / 8))
            if counted.received != before:
                self.note_answer(loop.time() - asked)
                return False
        if session.alive and counted.received == before:
            self.note_freeze(counted.received)
            session.close()
            return True
        return False

    async def confirm_freeze(self) -> bool:
        """A probe's transfer through this route stopped: ask every long tunnel now rather than
        after the watch's silence. True when the dialer has moved to capped carriers for it
        (a tunnel found frozen now, or by the watch within the last RECENT seconds): the
        route's next connections go capped, and a probe may try again."""
        if self.mode != "auto":
            return False
        loop = asyncio.get_running_loop()
        watched = [(s, c) for s, c in self._watched.items() if s.alive]
        found = await asyncio.gather(*(self._frozen(s, c) for s, c in watched))
        recent = self._froze_at is not None and loop.time() - self._froze_at < RECENT
        return (any(found) or recent) and self.capped_now()

    def note_freeze(self, received: int) -> None:
        """A long tunnel froze after `received` bytes: capped from now on (auto)."""
        self.frozen_after = received
        self._froze_at = asyncio.get_running_loop().time()
        self.froze.set()
        log.warning(
            "front %s: the tunnel froze after %.1f KB from the front (no reset, no close)%s",
            self.dialer.key.front,
            received / 1024,
            ": capped carriers from now on" if self.mode == "auto" else "",
        )
        if self.mode == "auto":
            self._capped_until = asyncio.get_running_loop().time() + STICKY

    async def aclose(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


async def adapt_to_freeze(dialer: Any) -> bool:
    """Whether `dialer` (or a dialer it wraps) changed how it carries after a transfer through
    it stopped mid-way (FrontDialer.adapt_to_freeze): the same transfer may work now."""
    for _ in range(8):
        adapt = getattr(dialer, "adapt_to_freeze", None)
        if adapt is not None:
            return bool(await adapt())
        dialer = getattr(dialer, "inner", None)
        if dialer is None:
            return False
    return False


def _find_counted(stream: Any) -> Counted | None:
    for _ in range(8):
        if isinstance(stream, Counted):
            return stream
        stream = getattr(stream, "inner", None)
        if stream is None:
            return None
    return None


async def _read_welcome(ws: Stream) -> tuple[int, bytes]:
    buf = b""
    while True:
        try:
            used, status = parse_welcome(buf)
            return status, buf[used:]
        except NeedMore:
            chunk = await ws.read(64)
            if not chunk:
                raise asyncio.IncompleteReadError(buf, None) from None
            buf += chunk
