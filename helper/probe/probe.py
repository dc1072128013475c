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
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from transports import DialError, Failure, Op
from transports.base import IPAddress, classify_os_error, dial_phase
from transports.resolver import Resolver
from transports.tls import tls_connect
from transports.wire import ProtocolError, parse_response_head

from ..events import EventBus, ProbeFinished, ProbeStarted
from ..services import ProbeTarget, Service
from .diagnose import diagnose
from .mtproto import request_pq
from .result import ProbeResult, Step, TargetResult

if TYPE_CHECKING:
    from ..routing import Route

__all__ = ["Prober"]

T = TypeVar("T")

MAX_BODY = 1 << 20  # read at most this much of a probe's response
MIN_RATE_SAMPLE = 32 * 1024  # bytes needed before a rate means anything
STALL = 2.0  # seconds without a byte, mid-download, that make a transfer "stalled"
USER_AGENT = "detour-probe"

# Marks of block pages seen in the wild (and the lab's own), matched in a response's first
# bytes. A probe of a service's endpoint that gets one of these has met the censor, not the
# service.
BLOCK_PAGE_MARKS = (
    b"Access to this resource is restricted",  # the lab's
    b"eais.rkn.gov.ru",
    "Доступ к информационному ресурсу ограничен".encode(),
    "доступ ограничен".encode(),
)


class _Failed(Exception):
    def __init__(self, error: DialError) -> None:
        self.error = error


class Prober:
    """Probes services through routes; publishes ProbeStarted/ProbeFinished events."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
        min_rate: float = 0.0,
        compare_resolver: Resolver | None = None,
        events: EventBus | None = None,
        concurrency: int = 16,
    ) -> None:
        self.timeout = timeout
        self.tls = tls or ssl.create_default_context()
        self._no_verify = ssl.create_default_context()
        self._no_verify.check_hostname = False
        self._no_verify.verify_mode = ssl.CERT_NONE
        self.min_rate = min_rate  # bytes per second; a slower download is "throttled"
        self.compare_resolver = compare_resolver
        self.events = events
        self._slots = asyncio.Semaphore(concurrency)

    async def probe(self, service: Service, route: Route) -> ProbeResult:
        """Every probe target of `service` through `route`, concurrently."""
        if self.events is not None:
            self.events.publish(ProbeStarted(service.name, route.name))
        targets = list(
            await asyncio.gather(*(self._probe_target(route, target) for target in service.probes))
        )
        result = ProbeResult(service.name, route.name, str(route.chain), targets)
        result.diagnosis = diagnose(
            result, route.chain.splits_client_hello, web_endpoint=route.chain.telegram_web
        )
        if self.events is not None:
            self.events.publish(ProbeFinished(result))
        return result

    async def probe_service(self, service: Service, routes: Iterable[Route]) -> list[ProbeResult]:
        return list(await asyncio.gather(*(self.probe(service, route) for route in routes)))

    # --- one target -----------------------------------------------------------------------

    async def _probe_target(self, route: Route, target: ProbeTarget) -> TargetResult:
        result = TargetResult(str(target))
        reason = route.not_applicable(target.endpoint)
        if reason is not None:
            return result.skip(reason)
        step = ["resolve"]  # what is running now, for a timeout's report
        async with self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._run(route, target, result, step)
            except TimeoutError:
                op = dial_phase.get() if step[0] == "connect" else _OPS.get(step[0], Op.CONNECT)
                waited = time.monotonic() - started
                failure = Failure.TIMEOUT
                if step[0] == "download" and result.received:
                    failure = Failure.STALLED
                result.fail(failure, op, f"nothing more within {waited:.1f}s")
            except _Failed as failed:
                error = failed.error
                result.fail(error.failure, error.op, error.detail)
        return result

    async def _run(
        self, route: Route, target: ProbeTarget, result: TargetResult, step: list[str]
    ) -> None:
        endpoint = target.endpoint
        began = time.monotonic()

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
            result.steps.append(Step(name, (time.monotonic() - t0) * 1000, True))
            return value

        answer: list[IPAddress] = []
        if route.resolver is not None and endpoint.ip is None:
            answer = await timed("resolve", route.resolver.resolve(endpoint.host), Op.RESOLVE)
        dial_phase.set(Op.CONNECT)
        try:
            stream = await timed("connect", route.dial(endpoint), Op.CONNECT)
        except _Failed as failed:
            raise await self._maybe_spoofed(failed, endpoint.host, answer) from None
        try:
            if target.kind in ("tls", "https"):
                context = self.tls if target.verify else self._no_verify
                stream = await timed(
                    "tls_handshake",
                    tls_connect(stream, context, endpoint.host, timeout=self.timeout),
                    Op.TLS_HANDSHAKE,
                )
            result.latency_ms = (time.monotonic() - began) * 1000
            if target.kind == "tcp":
                return
            if target.kind == "mtproto":
                await timed(
                    "mtproto_round_trip",
                    request_pq(stream, endpoint.host),
                    Op.MTPROTO_ROUND_TRIP,
                )
                return
            if target.kind in ("http", "https"):
                await self._request(target, stream, result, timed, step, began + self.timeout)
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
        deadline: float,
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

    async def _download(
        self, stream: Any, head: bytes, length: int | None, result: TargetResult, deadline: float
    ) -> None:
        """Read the body until it ends, or until the probe's time is nearly up (enough to
        measure a rate): a body that stops arriving is "stalled", one that crawls is
        "throttled"."""
        body = bytearray()
        wanted = min(MAX_BODY, length if length is not None else MAX_BODY)
        t0 = last_byte = time.monotonic()
        budget_end = deadline - 0.25  # leave time to report before the probe's timeout
        ended = False
        while len(body) < wanted:
            remaining = budget_end - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(STALL, remaining)):
                    chunk = await stream.read(65536)
            except TimeoutError:
                break
            except (OSError, EOFError) as exc:
                raise _Failed(classify_os_error(exc, Op.READ)) from None
            if not chunk:
                ended = True
                break
            body += chunk
            last_byte = time.monotonic()
            if len(body) <= 4096 and _is_block_page(head + body):
                raise _Failed(_block_page())
        now = time.monotonic()
        elapsed = now - t0
        result.received = len(body)
        complete = len(body) >= wanted
        result.steps.append(Step("download", elapsed * 1000, complete))
        if _is_block_page(head + body[:4096]):
            raise _Failed(_block_page())
        if ended and length is not None and not complete:
            raise _Failed(
                DialError(Failure.EOF, Op.READ, f"body ended after {len(body)} of {length} bytes")
            )
        if not complete and not ended and now - last_byte >= min(STALL, 1.0):
            raise _Failed(DialError(Failure.STALLED, Op.READ, f"stopped after {len(body)} bytes"))
        if elapsed > 0 and (len(body) >= MIN_RATE_SAMPLE or not complete):
            rate = len(body) / elapsed
            result.rate_kbps = rate / 1000
            if self.min_rate and rate < self.min_rate:
                raise _Failed(DialError(Failure.THROTTLED, Op.READ, f"{rate / 1000:.1f} KB/s"))

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


_OPS = {
    "resolve": Op.RESOLVE,
    "connect": Op.CONNECT,
    "tls_handshake": Op.TLS_HANDSHAKE,
    "http_round_trip": Op.HTTP_ROUND_TRIP,
    "mtproto_round_trip": Op.MTPROTO_ROUND_TRIP,
    "download": Op.READ,
}


def _is_block_page(data: bytes) -> bool:
    return any(mark in data for mark in BLOCK_PAGE_MARKS)


def _block_page() -> DialError:
    return DialError(Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP, "the answer is a block page")
