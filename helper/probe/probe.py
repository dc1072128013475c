"""Probing: a service's own endpoints, reached through one route, step by step -- resolve,
connect, TLS handshake (with the service's name, certificate checked), request, download, or
for a Telegram DC the first MTProto exchange -- each step timed, and the first that fails
named in the failure taxonomy. A target the route cannot carry at all (a `tgws` route and a
target that is no Telegram DC) is skipped, not failed.

The TLS handshake runs over the route's stream (transports/tls.py), so a route that rewrites
the ClientHello (tlsfrag) is probed with exactly what it will send for a client.

A route whose resolver is the network's own is also checked against an encrypted resolver,
when one is configured: a failure after an answer that differs from the encrypted one is
reported as DNS spoofing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from transports import DialError, Failure, Op
from transports.base import IPAddress, classify_os_error, dial_phase
from transports.deadlines import PatientDeadlines
from transports.resolver import Resolver
from transports.tls import tls_connect
from transports.wire import ProtocolError, parse_response_head

from ..events import EventBus, ProbeFinished, ProbePassed, ProbeStarted
from ..services import ProbeTarget, Service
from .diagnose import diagnose
from .mtproto import PqExchange
from .passing import CHECKING, Passing
from .patience import LAGGED, MAX_PATIENCE, Deadline, Patience
from .result import ProbeResult, Step, TargetResult
from .slots import Slot as _Slot
from .transfer import USER_AGENT, Transfers
from .transfer import Failed as _Failed
from .turns import turns, wait_turn
from .volume import settle

if TYPE_CHECKING:
    from ..routing import Route
    from ..search.budget import HandshakeBudget

__all__ = ["Prober", "turns", "wait_turn"]

T = TypeVar("T")

log = logging.getLogger("detour.probe")

# Seconds without a byte, mid-download, that make a transfer "stalled": STALL, or a share of
# the probe's timeout when that is longer (a probe given long for a slow network waits longer
# before it calls the bytes stopped).
STALL = 2.0
STALL_SHARE = 0.4
_PATIENT = PatientDeadlines()


class Prober(Transfers):
    """Probes services through routes; publishes ProbeStarted/ProbeFinished events (and
    ProbePassed, a route's early verdict, where the caller asks for it)."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        min_rate: float = 0.0,
        compare_resolver: Resolver | None = None,
        events: EventBus | None = None,
        concurrency: int = 16,
        budget: HandshakeBudget | None = None,
        patience: float = MAX_PATIENCE,
    ) -> None:
        """`budget`: the handshake budget a TLS target waits for before its dial.
        `patience`: at most this many times `timeout` (and the stall time) a target may take
        on a machine or network measured slow (patience.py; 1: never more)."""
        self.timeout = timeout
        self.patience = Patience(patience)
        self.stall = max(STALL, timeout * STALL_SHARE)
        self.tls = tls or ssl.create_default_context()
        self._no_verify = ssl.create_default_context()
        self._no_verify.check_hostname = False
        self._no_verify.verify_mode = ssl.CERT_NONE
        self.min_rate = min_rate  # bytes per second; a slower download is "throttled"
        self.compare_resolver = compare_resolver
        self.events = events
        # Targets probed at once, per service: a service whose targets all time out (a
        # black-holed range) does not hold up the verdicts on the others.
        self.concurrency = concurrency
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.budget = budget

    async def probe(
        self,
        service: Service,
        route: Route,
        *,
        passed: Callable[[ProbeResult], None] | None = None,
    ) -> ProbeResult:
        """Every probe target of `service` through `route`, concurrently. `passed`, when
        given, gets the route's verdict as soon as every target passed all but the freeze
        check (passing.py; published as ProbePassed), before the full verdict."""
        if self.events is not None:
            self.events.publish(ProbeStarted(service.name, route.name))
        # One target per service carries the freeze check: the first tls:// target the route
        # can carry, or, on a route that carries no web target at all (a `tgws` route: DCs
        # only), the first mtproto:// one. A freeze is by destination network, and one check
        # is enough load for it.
        carried = [t for t in service.probes if route.not_applicable(t.endpoint) is None]
        volume = next((t for t in carried if t.kind == "tls"), None)
        if not any(t.kind in ("tls", "https") for t in carried):
            volume = next((t for t in carried if t.kind == "mtproto"), None)

        def early(targets: list[TargetResult]) -> None:
            result = ProbeResult(service.name, route.name, str(route.chain), targets)
            result.diagnosis = CHECKING
            if self.events is not None:
                self.events.publish(ProbePassed(result))
            if passed is not None:
                passed(result)

        async def run(passing: Passing | None = None) -> list[TargetResult]:
            return list(
                await asyncio.gather(
                    *(
                        self._probe_target(
                            route,
                            t,
                            volume=t is volume,
                            service=service.name,
                            passing=(passing, i) if passing is not None else None,
                        )
                        for i, t in enumerate(service.probes)
                    )
                )
            )

        # With `passed`: only where a freeze check runs (else the full verdict is as soon).
        first = Passing(len(service.probes), early) if passed and volume is not None else None
        targets = await run(first)
        stalled = next((t for t in targets if t.failure is Failure.STALLED), None)
        if stalled is not None and await _adapt_to_freeze(route.dialer):
            # A `front:` route's long tunnel froze: capped carriers now, and their verdict.
            log.warning("probe %s via %s: %s; again", service.name, route.name, stalled.detail)
            targets = await run()
        unsure = next((t for t in targets if t.ok and t.freeze_unsure), None)
        if unsure is not None and volume is not None:  # once more, with twice the time
            again = await self._probe_target(
                route, volume, volume=True, service=service.name, timeout=2 * self.timeout
            )
            targets[targets.index(unsure)] = settle(unsure, again)
        result = ProbeResult(service.name, route.name, str(route.chain), targets)
        result.diagnosis = diagnose(
            result, route.chain.splits_client_hello, web_endpoint=route.chain.telegram_web
        )
        if self.events is not None:
            self.events.publish(ProbeFinished(result))
        return result

    async def probe_service(
        self,
        service: Service,
        routes: Iterable[Route],
        *,
        stagger: float = 0.0,
        on_result: Callable[[ProbeResult], None] | None = None,
    ) -> list[ProbeResult]:
        """`service` through each of `routes`; the results in the routes' order.

        `stagger`: start route i's probe i x stagger after the first, or as soon as every
        route before it has its verdict -- so the routes first in the order get the probe's
        slots (and the machine) first, as a race gives them the first attempt. `on_result`
        gets each result as soon as it is known, before the slower routes end."""
        routes = list(routes)
        order = turns(service, routes)
        finished = [asyncio.Event() for turn in order if turn is not None]

        async def one(index: int, route: Route) -> ProbeResult:
            turn = order[index]
            if turn is not None:
                await wait_turn(turn, finished, stagger, self.patience)
            try:
                result = await self.probe(service, route)
            finally:
                if turn is not None:
                    finished[turn].set()
            if on_result is not None:
                on_result(result)
            return result

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(routes))))

    # --- one target -----------------------------------------------------------------------

    async def _probe_target(
        self,
        route: Route,
        target: ProbeTarget,
        *,
        volume: bool = False,
        service: str = "",
        timeout: float | None = None,
        passing: tuple[Passing, int] | None = None,
    ) -> TargetResult:
        """`passing`: where to report that the target passed (passing.py), and its index.

        A target that timed out while the event loop lagged (patience.py: it lost LAGGED of
        the timeout or more) is probed once more before that verdict stands: its timeout
        says more about the machine than about the route."""
        result, lagged = await self._probe_once(route, target, volume, service, timeout, passing)
        if lagged:
            log.info("probe %s via %s: %s; once more", target, route.name, result.detail)
            result, _ = await self._probe_once(route, target, volume, service, timeout, passing)
        return result

    async def _probe_once(
        self,
        route: Route,
        target: ProbeTarget,
        volume: bool,
        service: str,
        timeout: float | None,
        passing: tuple[Passing, int] | None,
    ) -> tuple[TargetResult, bool]:
        """One try at a target; and whether it timed out while the loop lagged."""
        result = TargetResult(str(target))
        reason = route.not_applicable(target.endpoint)
        if reason is not None:
            if passing is not None:
                passing[0].passed(passing[1], result)
            return result.skip(reason), False
        step = ["resolve"]  # what is running now, for a timeout's report
        if self.budget is not None and target.kind in ("tls", "https"):
            await self.budget.take(target.endpoint.host)
        slots = self._slots.setdefault(service, asyncio.Semaphore(self.concurrency))
        lagged = False
        async with _Slot(slots, step, result):
            started = time.monotonic()
            deadline = self.patience.deadline(timeout or self.timeout, lambda: _done(result))
            try:
                async with deadline:
                    await self._run(route, target, result, step, volume, deadline, passing)
            except TimeoutError:
                op = dial_phase.get() if step[0] == "connect" else _OPS.get(step[0], Op.CONNECT)
                waited = time.monotonic() - started
                failure = Failure.TIMEOUT
                if step[0] in ("download", "volume") and result.received:
                    failure = Failure.STALLED
                detail = f"nothing more within {waited:.1f}s"
                lost = deadline.lost()
                if lost >= LAGGED * deadline.base:
                    detail += f" (the machine lost {lost:.1f}s of it)"
                    lagged = failure is Failure.TIMEOUT
                result.fail(failure, op, detail)
            except _Failed as failed:
                error = failed.error
                result.fail(error.failure, error.op, error.detail)
        if passing is not None:
            if result.freeze_checked is not None:
                passing[0].checked()  # its freeze check ended: the full verdict follows
            elif result.ok:
                passing[0].passed(passing[1], result)
        return result, lagged

    async def _run(
        self,
        route: Route,
        target: ProbeTarget,
        result: TargetResult,
        step: list[str],
        volume: bool,
        deadline: Deadline,
        passing: tuple[Passing, int] | None = None,
    ) -> None:
        endpoint = target.endpoint

        async def timed(name: str, work: Awaitable[T], op: Op) -> T:
            step[0] = name
            t0 = time.monotonic()
            try:
                value = await work
            except DialError as exc:
                result.steps.append(Step(name, (time.monotonic() - t0) * 1000, False))
                raise _Failed(exc) from None
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                result.steps.append(Step(name, (time.monotonic() - t0) * 1000, False))
                raise _Failed(classify_os_error(exc, op)) from None
            took = time.monotonic() - t0
            result.steps.append(Step(name, took * 1000, True))
            if name in ("connect", "tls_handshake"):
                self.patience.step(took)
            return value

        answer: list[IPAddress] = []
        if route.resolver is not None and endpoint.ip is None:
            answer = await timed("resolve", route.resolver.resolve(endpoint.host), Op.RESOLVE)
        dial_phase.set(Op.CONNECT)
        try:
            # The route's timeout for its whole chain grows with the loop time lost, as the
            # target's own deadline does (transports/deadlines.py, patient).
            stream = await timed("connect", route.dial(endpoint, _PATIENT), Op.CONNECT)
        except _Failed as failed:
            raise await self._maybe_spoofed(failed, endpoint.host, answer) from None
        try:
            if target.kind in ("tls", "https"):
                context = self.tls if target.verify else self._no_verify
                stream = await timed(
                    "tls_handshake",
                    # The target's deadline bounds it (stretched, when the machine is slow).
                    tls_connect(
                        stream, context, endpoint.host, timeout=self.patience.most(deadline.base)
                    ),
                    Op.TLS_HANDSHAKE,
                )
            result.latency_ms = (loop_time() - deadline.start) * 1000
            if target.kind == "tcp":
                return
            if target.kind == "tls" and volume:
                _checking(step, result, passing)
                await self._volume(target, stream, result, deadline)
                return
            if target.kind == "mtproto":
                exchange = PqExchange(stream, endpoint.host)
                await timed("mtproto_round_trip", exchange.first(), Op.MTPROTO_ROUND_TRIP)
                if volume:
                    _checking(step, result, passing)
                    await self._volume_mtproto(exchange, result, deadline)
                return
            if target.kind in ("http", "https"):
                await self._request(target, stream, result, timed, step, deadline)
        except _Failed as failed:
            raise await self._maybe_spoofed(failed, endpoint.host, answer) from None
        finally:
            stream.abort()

    async def _request(
        self,
        target: ProbeTarget,
        stream: Any,
        result: TargetResult,
        timed: Callable[..., Awaitable[Any]],
        step: list[str],
        deadline: Deadline,
    ) -> None:
        host = target.endpoint.host
        stream.write(
            f"GET {target.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        head = await timed(
            "http_round_trip", stream.readuntil(b"\r\n\r\n", 65536), Op.HTTP_ROUND_TRIP
        )
        try:
            length = parse_response_head(head).content_length
        except ProtocolError:
            raise _Failed(
                DialError(Failure.UNKNOWN, Op.HTTP_ROUND_TRIP, "the answer is not HTTP")
            ) from None
        step[0] = "download"
        await self._download(stream, head, length, result, deadline)

    async def _maybe_spoofed(self, failed: _Failed, host: str, answer: list[IPAddress]) -> _Failed:
        """A failure after a DNS answer that an encrypted resolver contradicts is spoofing."""
        if not answer or self.compare_resolver is None or failed.error.op is Op.RESOLVE:
            return failed
        try:
            async with asyncio.timeout(self.timeout):
                honest = await self.compare_resolver.resolve(host)
        except (DialError, TimeoutError):
            return failed
        if set(honest) & set(answer):
            return failed
        return _Failed(
            DialError(
                Failure.DNS_SPOOFED,
                Op.RESOLVE,
                f"{host}: the resolver answered {', '.join(map(str, answer[:3]))}, encrypted DNS "
                f"{', '.join(map(str, honest[:3]))}; then {failed.error}",
            )
        )


def _done(result: TargetResult) -> float:
    """Seconds the target's completed steps took (patience.py: its own progress)."""
    return sum(step.ms for step in result.steps if step.ok) / 1000


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def _checking(step: list[str], result: TargetResult, passing: tuple[Passing, int] | None) -> None:
    """A target's freeze check starts: all but it has passed (passing.py)."""
    step[0] = "volume"
    if passing is not None:
        passing[0].passed(passing[1], result, checking=True)


_OPS = {
    "resolve": Op.RESOLVE,
    "connect": Op.CONNECT,
    "tls_handshake": Op.TLS_HANDSHAKE,
    "http_round_trip": Op.HTTP_ROUND_TRIP,
    "mtproto_round_trip": Op.MTPROTO_ROUND_TRIP,
    "download": Op.READ,
    "volume": Op.READ,
}


async def _adapt_to_freeze(dialer: object) -> bool:
    # Imported when a transfer stalls: the fronted tunnel's modules (and the compiled
    # WebSocket mask they load) stay out of a detour that has no `front:` route.
    from transports.fronted.modes import adapt_to_freeze

    return await adapt_to_freeze(dialer)
