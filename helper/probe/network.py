"""Offline or censored: OONI's control measurement. When a service fails through every route,
that is censorship only if the network itself works; a machine with no network at all sees
every name fail to resolve and every address black-holed, which is no evidence of blocking.

So when no probe of a service got any answer (not a DNS answer, not a connection), detour
asks two cheap questions of the network itself:

- a route lookup: `connect()` on a UDP socket to a documentation address (RFC 5737,
  RFC 3849) picks a route and a source address and sends nothing; no route at all means no
  network;
- control targets (`[probe] control_targets`): addresses that answer from censored and
  uncensored networks alike, connected to directly, by address (no DNS).

`verdict()` turns what was seen into "online", "offline" or "unknown" without any I/O (unit
tested without sockets). `NetworkWatch` does the I/O: it measures when asked, and while the
network is down it polls -- the route lookup every second (free), the control targets when
the route or source address changes and every few seconds -- and calls back as soon as the
network is back, so that the services are probed again at once, not at the next interval.

When the network is down, a failed probe's diagnosis says so (`offline_result`) instead of
naming DNS blocking or DPI; the failure and the steps stay as measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from transports import Endpoint

from ..status import NetworkView
from .result import ProbeResult

__all__ = [
    "OFFLINE",
    "ONLINE",
    "UNKNOWN",
    "Evidence",
    "NetworkWatch",
    "RouteState",
    "answered",
    "controls_for",
    "offline_result",
    "route_lookup",
    "verdict",
]

log = logging.getLogger("detour.network")

ONLINE, OFFLINE, UNKNOWN = "online", "offline", "unknown"

# Documentation addresses: a route lookup towards them follows the default route, and no
# packet is sent (UDP connect() only chooses the route and the source address).
LOOKUP_ADDRESSES = (("203.0.113.1", socket.AF_INET), ("2001:db8::1", socket.AF_INET6))

POLL = 1.0  # seconds between route lookups while offline
CONTROL_EVERY = 5  # ... and between control checks, in polls, when nothing changed
CONTROL_TIMEOUT = 3.0  # at most, for one control connect


# --- what was seen, and what it means (no I/O) ---------------------------------------------


@dataclass(frozen=True)
class RouteState:
    """What the route lookup found: whether any route leads out, and from which source
    addresses (an address change is a new network)."""

    routed: bool
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evidence:
    services: bool | None = None  # some service probe got an answer (None: none ran)
    controls: tuple[bool, ...] = ()  # per control target: it answered
    route: RouteState | None = None  # None: not looked up


def answered(result: ProbeResult) -> bool:
    """Whether anything on the network answered a probe: a step that worked (a DNS answer,
    a connection; a reset or a block page comes after a connection that worked).
    A failed lookup proves nothing: with no network, a system resolver may say "no such
    name" as readily as "timeout"."""
    return any(step.ok for target in result.targets for step in target.steps)


def verdict(evidence: Evidence, now: float | None = None) -> NetworkView:
    """online: something answered. offline: no route out, or nothing answered (no service,
    no DNS, no control target). unknown: nothing to tell (no controls configured and a
    route exists, or nothing measured)."""
    at = time.time() if now is None else now
    if evidence.services:
        return NetworkView(ONLINE, "a service answered", at)
    if any(evidence.controls):
        return NetworkView(ONLINE, "a control target answered", at)
    if evidence.route is not None and not evidence.route.routed:
        return NetworkView(OFFLINE, "no route to the internet (not connected?)", at)
    if evidence.controls:
        return NetworkView(OFFLINE, "nothing answers: no service, no DNS, no control target", at)
    return NetworkView(UNKNOWN, "", at)


def offline_result(result: ProbeResult, network: NetworkView) -> ProbeResult:
    """A failed probe while the network is down: the diagnosis says so, not censorship."""
    if result.ok or not result.applicable:
        return result
    return dataclasses.replace(result, diagnosis=f"offline: {network.reason}")


CONTROLS_ENV = "DETOUR_CONTROL_TARGETS"


def controls_for(configured: Sequence[Endpoint]) -> tuple[Endpoint, ...]:
    """The control targets to use: the config's, except that where the config keeps the
    built-in public ones, DETOUR_CONTROL_TARGETS (`IP:PORT` comma-separated; empty: none)
    replaces them -- for a test run or a lab, which must not send packets to the public
    resolvers, whatever configs they start."""
    from ..config.probe import CONTROL_TARGETS, control_target

    override = os.environ.get(CONTROLS_ENV)
    if override is None or tuple(configured) != tuple(map(control_target, CONTROL_TARGETS)):
        return tuple(configured)
    try:
        return tuple(control_target(t.strip()) for t in override.split(",") if t.strip())
    except ValueError as exc:
        log.warning("%s ignored: %s", CONTROLS_ENV, exc)
        return tuple(configured)


# --- the I/O ------------------------------------------------------------------------------


def route_lookup() -> RouteState:
    """Whether the kernel has a route out (IPv4 or IPv6), and the source addresses it would
    use. Sends nothing."""
    sources = []
    for address, family in LOOKUP_ADDRESSES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((address, 9))
                sources.append(sock.getsockname()[0])
        except OSError:
            continue
    return RouteState(bool(sources), tuple(sources))


async def control_connect(target: Endpoint, timeout: float) -> bool:
    """Whether a control target answers: a connection, or a refusal (the far end, or
    something on the way, answered). Unreachable or silent: no."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(target.host, target.port)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False
    writer.transport.abort()
    return True


class NetworkWatch:
    """Measures whether the network is up, remembers the answer (`state`), and while it is
    down, watches for it to come back; then calls `on_back`."""

    def __init__(
        self,
        controls: Sequence[Endpoint],
        *,
        timeout: float = CONTROL_TIMEOUT,
        poll: float = POLL,
        lookup: Callable[[], RouteState] = route_lookup,
        connect: Callable[[Endpoint, float], Awaitable[bool]] | None = None,
    ) -> None:
        self.controls: tuple[Endpoint, ...] = ()
        self.timeout = CONTROL_TIMEOUT
        self.configure(controls, timeout)
        self.poll = poll
        self.state = NetworkView()
        self.on_back: Callable[[NetworkView], None] | None = None
        # Also told when the network is back, after on_back (the UDP monitor's).
        self.back_listeners: list[Callable[[NetworkView], None]] = []
        self._lookup = lookup
        self._connect = connect or control_connect  # (looked up now: tests replace it)
        self._checking: asyncio.Task[NetworkView] | None = None
        self._watching: asyncio.Task[None] | None = None

    def configure(self, controls: Sequence[Endpoint], timeout: float) -> None:
        """The control targets, and the probe timeout (a control connect takes at most
        CONTROL_TIMEOUT); a reload calls this, and the state is kept. DETOUR_CONTROL_TARGETS
        may replace the built-in ones (`controls_for`)."""
        self.controls = controls_for(controls)
        self.timeout = min(timeout, CONTROL_TIMEOUT)

    async def assess(self, results: Iterable[ProbeResult]) -> NetworkView:
        """The network's state after these probe results: online at once when one got an
        answer; otherwise the route lookup and the control targets decide."""
        results = list(results)
        if any(answered(r) for r in results):
            return self._set(verdict(Evidence(services=True)))
        # Services probed at the same time share one measurement.
        if self._checking is None or self._checking.done():
            services = False if results else None
            self._checking = asyncio.ensure_future(self._measure(services))
        return await asyncio.shield(self._checking)

    async def check_route(self) -> NetworkView:
        """Only the route lookup (free, sends nothing): offline at once when there is no
        route out; otherwise the state as it was (the controls decide later, in `assess`)."""
        route = await asyncio.to_thread(self._lookup)
        if route.routed:
            return self.state
        return self._set(verdict(Evidence(False, (), route)))

    async def _measure(self, services: bool | None) -> NetworkView:
        route = await asyncio.to_thread(self._lookup)
        controls: tuple[bool, ...] = ()
        if route.routed and self.controls:
            controls = tuple(
                await asyncio.gather(*(self._connect(c, self.timeout) for c in self.controls))
            )
        return self._set(verdict(Evidence(services, controls, route)))

    def _set(self, state: NetworkView) -> NetworkView:
        was = self.state
        self.state = state
        if state.offline and not was.offline:
            log.warning("the network is down: %s", state.reason)
            if self._watching is None or self._watching.done():
                self._watching = asyncio.ensure_future(self._watch())
        elif was.offline and not state.offline:
            # Whatever saw it (the watch, a control, a service's probe): every service is
            # probed again now, so that none keeps an "offline" diagnosis until its interval.
            log.info("the network is back: %s", state.reason or state.state)
            if self.on_back is not None:
                self.on_back(state)
            for listener in tuple(self.back_listeners):
                listener(state)
        return state

    async def _watch(self) -> None:
        """While offline: a route lookup every poll, the controls when the route changed and
        every CONTROL_EVERY polls; when the network is back, `on_back`."""
        last = await asyncio.to_thread(self._lookup)
        polls = 0
        while self.state.offline:
            await asyncio.sleep(self.poll)
            polls += 1
            route = await asyncio.to_thread(self._lookup)
            changed, last = route != last, route
            if not (changed or polls % CONTROL_EVERY == 0):
                continue
            if changed:
                log.info("the route changed (%s)", ", ".join(route.sources) or "no route")
            # Back (with no controls, a route that appears is enough): _set calls on_back.
            await self._measure(services=None)

    async def aclose(self) -> None:
        for task in (self._checking, self._watching):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
