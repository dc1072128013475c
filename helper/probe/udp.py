"""UDP probes: whether a route carries a service's calls, apart from whether it carries its
chats (a network can pass TCP and drop UDP, and many do since 2025).

A service's `udp_probes` (`stun://HOST[:PORT]`, port 3478 by default: a STUN binding request,
RFC 5389, answered by a binding response with the same transaction; `udp-echo://HOST:PORT`:
a datagram that must come back as sent) are sent through the route's datagram side
(transports/datagram.py), a few times within the timeout, as a call client retransmits.

    ok                  every target answered; rtt_ms is the slowest first answer
    udp_not_carried     the route carries no UDP at all (it says why: an HTTP proxy, tgws...)
    udp_dropped         sent, never answered: something on the way drops the datagrams
    udp_unreachable     could not even be sent (no address, an upstream refused UDP ASSOCIATE)

Over all of a service's routes (`udp_verdict`): `udp_works` (a route carries its UDP),
`udp_dropped_everywhere` (every route that carries UDP had its datagrams dropped: the network
drops UDP, and calls need datagrams carried inside a TCP route), `udp_not_carried` (no route
carries UDP) or `udp_unreachable`.

The results go into the router's UDP health book (`UdpHealth`), kept apart from TCP health:
the listener's UDP associations try routes whose UDP is known to work first, and routes
whose UDP was seen dropped last.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transports import DialError, Endpoint
from transports.datagram import NoDatagrams, datagram_dialer
from transports.stun import BINDING_SUCCESS, binding_request, parse_message
from transports.wire import ProtocolError

from ..routing.udp_health import UdpHealth
from ..services import UdpProbeTarget

if TYPE_CHECKING:
    from ..routing import Route

__all__ = ["UdpHealth", "UdpProbeResult", "probe_udp", "probe_udp_routes", "udp_verdict"]

ATTEMPTS = 3  # datagrams sent per target within the timeout (STUN retransmits, RFC 5389 §7.2.1)

OK = "ok"
NOT_CARRIED = "udp_not_carried"
DROPPED = "udp_dropped"
UNREACHABLE = "udp_unreachable"


@dataclass
class UdpProbeResult:
    service: str
    route: str
    ok: bool
    diagnosis: str  # ok | udp_not_carried | udp_dropped | udp_unreachable
    detail: str = ""
    rtt_ms: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "ok": self.ok,
            "diagnosis": self.diagnosis,
            "detail": self.detail,
            "rtt_ms": self.rtt_ms,
            "targets": self.targets,
        }


class _Answers:
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[float]] = {}

    def receive(self, payload: bytes, source: Endpoint) -> None:
        for key, future in self.waiting.items():
            if not future.done() and _answers(key, payload):
                future.set_result(time.monotonic())


def _answers(key: bytes, payload: bytes) -> bool:
    kind, sent = key[:1], key[1:]
    if kind == b"s":
        try:
            message = parse_message(payload)
        except ProtocolError:
            return False
        return message.type == BINDING_SUCCESS and message.transaction == sent
    return payload == sent


async def probe_udp(
    service: str, route: Route, targets: Iterable[UdpProbeTarget], timeout: float = 3.0
) -> UdpProbeResult:
    """Probe `targets` through `route` (module docstring)."""
    targets = list(targets)
    try:
        dialer = datagram_dialer(route.name, route.chain, route.dialer, off=not route.udp)
    except NoDatagrams as exc:
        return UdpProbeResult(service, route.name, False, NOT_CARRIED, str(exc))
    answers = _Answers()
    session = dialer.open(answers.receive)
    try:
        rows = await asyncio.gather(*(_probe_target(session, answers, t, timeout) for t in targets))
    finally:
        session.close()
    verdict, detail = OK, ""
    for row in rows:
        if row["ok"]:
            continue
        # Not even sent outweighs sent and not answered.
        kind = UNREACHABLE if row.pop("sent") is False else DROPPED
        if verdict == OK or (kind == UNREACHABLE and verdict == DROPPED):
            verdict, detail = kind, f"{row['target']}: {row['error']}"
    for row in rows:
        row.pop("sent", None)
    ok = verdict == OK and bool(rows)
    worst = max((row["rtt_ms"] for row in rows), default=None) if ok else None
    return UdpProbeResult(service, route.name, ok, verdict, detail, worst, list(rows))


async def _probe_target(session, answers: _Answers, target: UdpProbeTarget, timeout: float):
    row: dict[str, Any] = {"target": str(target), "ok": False, "rtt_ms": None, "sent": False}
    try:
        async with asyncio.timeout(timeout):
            await session.prepare(target.endpoint)
    except (DialError, OSError, TimeoutError) as exc:
        row["error"] = str(exc) or "timed out"
        return row
    if target.kind == "stun":
        payload, transaction = binding_request()
        key = b"s" + transaction
    else:
        payload = b"detour-probe " + os.urandom(8).hex().encode()
        key = b"e" + payload
    future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    answers.waiting[key] = future
    started = time.monotonic()
    try:
        for _attempt in range(ATTEMPTS):
            session.send(payload, target.endpoint)
            row["sent"] = True
            try:
                async with asyncio.timeout(timeout / ATTEMPTS):
                    await asyncio.shield(future)
                break
            except TimeoutError:
                continue
    except OSError as exc:
        row["error"] = str(exc)
        return row
    finally:
        del answers.waiting[key]
    if not future.done():
        row["error"] = f"no answer to {ATTEMPTS} datagrams within {timeout:g}s"
        return row
    row.update(ok=True, rtt_ms=round((future.result() - started) * 1000, 1))
    return row


async def probe_udp_routes(
    service, routes: Sequence[Route], health: UdpHealth | None = None, timeout: float = 3.0
) -> list[UdpProbeResult]:
    """Probe a service's `udp_probes` through each of `routes`, at once; record the
    verdicts in `health`."""
    results = await asyncio.gather(
        *(probe_udp(service.name, route, service.udp_probes, timeout) for route in routes)
    )
    if health is not None:
        for result in results:
            health.record(result.service, result.route, result.ok, result.to_json())
    return list(results)


WORKS = "udp_works"
DROPPED_EVERYWHERE = "udp_dropped_everywhere"


def udp_verdict(results: Sequence[UdpProbeResult]) -> tuple[str, str]:
    """(diagnosis, detail) for a service over all its routes (module docstring)."""
    working = [r.route for r in results if r.ok]
    if working:
        return WORKS, "through " + ", ".join(working)
    carried = [r for r in results if r.diagnosis != NOT_CARRIED]
    if not carried:
        return NOT_CARRIED, "no route carries UDP" if results else "no route"
    dropped = [r.route for r in carried if r.diagnosis == DROPPED]
    if len(dropped) == len(carried):
        return DROPPED_EVERYWHERE, (
            "datagrams dropped through every route that carries UDP ("
            + ", ".join(dropped)
            + "): the network drops this UDP; calls need a route that carries datagrams "
            "inside TCP"
        )
    unreachable = [r for r in carried if r.diagnosis == UNREACHABLE]
    return UNREACHABLE, "; ".join(f"{r.route}: {r.detail}" for r in unreachable)
