"""The router: which service a destination belongs to, which routes may carry it and in what
order, and dialing them as a staggered race.

Candidates are the service's routes (its own order, or every route in config order), or the
`[default]` policy route for destinations that belong to no service; disabled routes are left
out and a pinned route is the only candidate. Health orders them: routes known to work first,
then unknown, then failing ones.

Connecting races the candidates Happy-Eyeballs style (RFC 8305's algorithm over routes): start
the best route; start the next after the stagger, or at once when an attempt fails; the first
to connect wins and the others are cancelled. Each attempt gets its route's `timeout` in
total, however many layers the chain has (Route.dial). The client sees an error only when
every candidate has failed, and the error names each failure.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, fields

from transports import Chain, Dialer, DialError, DialOptions, Endpoint, Failure, Op, Stream
from transports.base import dial_phase
from transports.chain import base_dialer
from transports.direct import DirectDialer
from transports.guard import DestinationRefused
from transports.pt import PtManager
from transports.race import RaceFailed, staggered_race
from transports.resolver import Resolver

from ..config import DENY, Config, RouteConfig
from ..events import DialFailed, EventBus, RouteChanged
from ..search.budget import HandshakeBudget
from ..services import Service, ServiceTable
from .health import HealthBook

__all__ = ["AllRoutesFailed", "Connection", "Denied", "Route", "Router"]

log = logging.getLogger("detour.routing")


@dataclass(frozen=True)
class Route:
    name: str
    chain: Chain
    dialer: Dialer
    # The resolver this route uses for destination names, when detour resolves them itself
    # (None when a proxy on the route resolves them).
    resolver: Resolver | None = None
    # The route's `timeout`: how long one dial through the whole chain may take (None: only
    # the layers' own timeouts bound it).
    timeout: float | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.chain})"

    def not_applicable(self, target: Endpoint) -> str | None:
        """Why this route cannot carry `target` at all (a `tgws` route and a destination
        that is no Telegram DC), else None. Such a route is skipped, not failed."""
        check = getattr(self.dialer, "not_applicable", None)
        return check(target) if check is not None else None

    async def dial(self, target: Endpoint) -> Stream:
        """Dial `target` through the chain within the route's timeout, in total.

        Each layer has its own timeouts (the inner safety nets), but along a chain they add
        up: resolving, connecting and every proxy handshake may each take nearly as long. A
        user who sets `timeout = "10s"` means the route, so a dial still running when it ends
        fails with TIMEOUT during the step that was running (`dial_phase`, set by the layers
        in this task), and the router moves on to the next route.
        """
        if self.timeout is None:
            return await self.dialer.dial(target)
        dial_phase.set(Op.CONNECT)
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                return await self.dialer.dial(target)
        except TimeoutError:
            if not deadline.expired():
                raise  # a layer's own TimeoutError, not the route's deadline
            op = dial_phase.get()
            raise DialError(
                Failure.TIMEOUT,
                op,
                f"route {self.name!r} did not connect within {self.timeout:g}s",
            ) from None


class Denied(Exception):
    """Policy forbids this destination; nothing was dialed."""


class AllRoutesFailed(Exception):
    """Every candidate route failed; `attempts` lists (route name, error) in order tried."""

    def __init__(
        self, target: Endpoint, service: Service | None, attempts: list[tuple[str, DialError]]
    ) -> None:
        self.target = target
        self.service = service
        self.attempts = attempts
        super().__init__(self.describe())

    @property
    def primary(self) -> DialError:
        """The preferred route's error: what the client's error reply is based on."""
        if not self.attempts:
            return DialError(Failure.UNKNOWN, Op.CONNECT, "no route left to try")
        return self.attempts[0][1]

    def describe(self) -> str:
        what = f"{self.service.name} ({self.target})" if self.service else str(self.target)
        tried = "; ".join(f"via {name}: {error}" for name, error in self.attempts)
        return f"cannot reach {what}: {tried}"


@dataclass(frozen=True)
class Connection:
    stream: Stream
    route: Route
    service: Service | None
    setup_ms: float = 0.0


def build_routes(
    config: Config, resolver: Resolver | None, options: DialOptions | None = None
) -> list[Route]:
    """The configured routes as Dialers (resources that need closing go on options.resources).

    A route's timeout bounds each of its layers (connect, each handshake) as well as the
    whole dial (Route.dial): the layers' own timeouts are the inner safety nets.
    """
    base = options or DialOptions()
    return [build_route(rc.name, rc.chain, rc.timeout, resolver, base) for rc in config.routes]


def build_route(
    name: str, chain: Chain, timeout: float | None, resolver: Resolver | None, base: DialOptions
) -> Route:
    """One route as a Dialer, with the options every route of a config shares."""
    dialer = chain.build(
        DialOptions(
            resolver=resolver,
            connect_timeout=timeout,
            handshake_timeout=timeout,
            attempt_delay=base.attempt_delay,
            hosts=base.hosts,
            tls=base.tls,
            resources=base.resources,
            pluggable=base.pluggable,
            core_program=base.core_program,
        )
    )
    local = base_dialer(dialer)
    own = local.resolver if chain.resolves_locally and isinstance(local, DirectDialer) else None
    return Route(name, chain, dialer, own, timeout)


class Router:
    def __init__(
        self,
        routes: Sequence[Route],
        services: ServiceTable,
        default_policy: str,
        *,
        stagger: float = 0.25,
        health: HealthBook | None = None,
        events: EventBus | None = None,
        budget: HandshakeBudget | None = None,
        resolver: Resolver | None = None,
        options: DialOptions | None = None,
    ) -> None:
        self.routes = list(routes)
        self.services = services
        self.default_policy = default_policy
        self.stagger = stagger
        self.health = health or HealthBook()
        self.events = events
        self.pins: dict[str, str] = {}  # service name -> route name
        self.disabled: set[str] = set()  # route names
        # Told about every service a client uses, and about a route that keeps failing.
        self.on_use: Callable[[Service], None] | None = None
        self.on_failing: Callable[[Service | None, Route], None] | None = None
        self._by_name = {route.name: route for route in self.routes}
        self._active: dict[str, str | None] = {}
        # The handshake budget a race's later attempts wait for (helper/search/budget.py).
        self.budget = budget
        # What new routes are built with (strategies a search found, helper/search/).
        self.resolver = resolver
        self.options = options or DialOptions()
        self.found: dict[str, list[str]] = {}  # service -> routes a search found for it

    @classmethod
    def from_config(
        cls,
        config: Config,
        resolver: Resolver | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        resources: AsyncExitStack | None = None,
        events: EventBus | None = None,
        pluggable: PtManager | None = None,
        budget: HandshakeBudget | None = None,
    ) -> Router:
        """`pluggable` runs the routes' pluggable transport clients (one is made per `pt:`
        layer without it)."""
        options = DialOptions(
            hosts=config.dns.hosts,
            tls=tls or config.tls.client_context(),
            resources=resources,
            pluggable=pluggable,
            core_program=config.core.program or None,
        )
        return cls(
            build_routes(config, resolver, options),
            ServiceTable(config.services),
            config.default_policy,
            stagger=config.probe.stagger,
            events=events,
            budget=budget,
            resolver=resolver,
            options=options,
        )

    def route(self, name: str) -> Route:
        return self._by_name[name]

    def has_route(self, name: str) -> bool:
        return name in self._by_name

    # --- routes a strategy search found ---------------------------------------------------

    def build_route(self, name: str, chain: Chain, timeout: float | None = None) -> Route:
        """A route that is not (yet) in this router, built as the config's routes are (with
        a route's default timeout unless given)."""
        if timeout is None:
            timeout = next(f.default for f in fields(RouteConfig) if f.name == "timeout")
        return build_route(name, chain, timeout, self.resolver, self.options)

    def add_found(self, service: str, route: Route) -> None:
        """Make `route` a route of this router for `service` only: visible and pinnable like
        any route, tried after the service's own routes until health puts it first."""
        if route.name not in self._by_name:
            self.routes.append(route)
            self._by_name[route.name] = route
        names = self.found.setdefault(service, [])
        if route.name not in names:
            names.append(route.name)

    def forget_found(
        self, service: str | None = None, only: Sequence[str] | None = None
    ) -> list[str]:
        """Remove the routes a search found (for `service`, or all; `only` those named);
        returns their names."""
        services = [service] if service is not None else list(self.found)
        dropped: list[str] = []
        for name in services:
            names = self.found.pop(name, [])
            if only is not None:
                if kept := [n for n in names if n not in only]:
                    self.found[name] = kept
                names = [n for n in names if n in only]
            dropped += names
        still = {n for names in self.found.values() for n in names}
        gone = {n for n in dropped if n not in still}
        self.routes = [r for r in self.routes if r.name not in gone]
        for name in gone:
            self._by_name.pop(name, None)
            self.disabled.discard(name)
        for key, pinned in list(self.pins.items()):
            if pinned in gone:
                del self.pins[key]
        for (service_name, route_name), _health in self.health.items():
            if route_name in gone:
                self.health.forget(service_name, route_name)
        return dropped

    def routes_for(self, service: Service) -> list[Route]:
        """The routes that may carry `service`, in order, less disabled ones (pins aside):
        its own routes (or every route of the config), then the routes found for it."""
        found_elsewhere = {n for names in self.found.values() for n in names}
        names = service.routes or [r.name for r in self.routes if r.name not in found_elsewhere]
        names = [*names, *(n for n in self.found.get(service.name, ()) if n not in names)]
        return [self._by_name[n] for n in names if n not in self.disabled and n in self._by_name]

    # --- which routes ---------------------------------------------------------------------

    def candidates(self, service: Service | None) -> list[Route]:
        """The routes a connection may take, in config order (not yet ordered by health)."""
        if service is None:
            return [self._by_name[self.default_policy]] if self.default_policy != DENY else []
        pinned = self.pins.get(service.name)
        if pinned is not None:
            return [self._by_name[pinned]]
        return self.routes_for(service)

    def plan(self, target: Endpoint) -> tuple[Service | None, list[Route]]:
        """The service `target` belongs to and the routes to try, best first."""
        service = self.services.match(target)
        if service is None and self.default_policy == DENY:
            raise Denied(
                f"{target} belongs to no configured service and the default policy is deny"
            )
        candidates = self.candidates(service)
        if not candidates:
            raise Denied(f"every route for {service.name if service else target} is disabled")
        # Routes that cannot carry this destination at all are left out; if that leaves
        # none, they are tried anyway, to fail at once with their reasons.
        usable = [route for route in candidates if route.not_applicable(target) is None]
        return service, self.health.order(_key(service), usable or candidates)

    def active_route(self, service: Service) -> Route | None:
        """The route a new connection of `service` would try first, if one is known to work."""
        candidates = self.candidates(service)
        if service.name in self.pins:
            return candidates[0]
        return self.health.active(service.name, candidates)

    def note_health_change(self, reason: str) -> None:
        """Publish RouteChanged for every service whose active route changed."""
        for service in self.services:
            active = self.active_route(service)
            name = active.name if active else None
            if self._active.get(service.name, "?") != name:
                old = self._active.get(service.name)
                self._active[service.name] = name
                if self.events is not None:
                    self.events.publish(RouteChanged(service.name, old, name, reason))
                log.info(
                    "%s: %s", service.name, f"now via {name}" if name else "no route known to work"
                )

    # --- connecting -----------------------------------------------------------------------

    async def connect(self, target: Endpoint, *, exclude: Sequence[str] = ()) -> Connection:
        """Dial `target` through its routes (less those in `exclude`, already tried)."""
        service, ordered = self.plan(target)
        ordered = [route for route in ordered if route.name not in exclude]
        if not ordered:
            raise AllRoutesFailed(target, service, [])
        if service is not None and self.on_use is not None:
            self.on_use(service)
        errors: dict[str, DialError] = {}
        started = time.monotonic()

        def attempt(route: Route, first: bool):
            async def dial() -> Stream:
                if self.budget is not None:
                    # The first route goes at once; later ones keep the handshake budget.
                    await self.budget.take(target.host, client=True, first=first)
                try:
                    stream = await route.dial(target)
                except DialError as exc:
                    errors[route.name] = exc
                    log.debug("%s via %s failed: %s", target, route.name, exc)
                    # Policy, or a destination the route cannot carry: not the route's health.
                    if not isinstance(exc, DestinationRefused) and not _not_applicable(exc):
                        self._account(service, route, exc)
                    raise
                return stream

            return dial

        try:
            index, stream = await staggered_race(
                [attempt(route, i == 0) for i, route in enumerate(ordered)],
                self.stagger,
                discard=lambda s: s.abort(),
            )
        except RaceFailed as failed:
            attempts = [
                (route.name, errors[route.name]) for route in ordered if route.name in errors
            ]
            if not attempts:  # a dialer broke its contract: let the real error through
                raise next(e for e in failed.errors if e is not None) from None
            if all(isinstance(error, DestinationRefused) for _, error in attempts):
                raise Denied(attempts[0][1].detail) from None
            raise AllRoutesFailed(target, service, attempts) from None
        setup = (time.monotonic() - started) * 1000
        return Connection(stream, ordered[index], service, setup)

    def record_failure(self, service: Service | None, route: Route, error: DialError) -> None:
        """A connection through `route` failed after its dial (reset after the ClientHello,
        silence): it counts like a failed dial."""
        self._account(service, route, error)

    def record_success(self, service: Service | None, route: Route) -> None:
        """The destination answered through `route`: its run of failures ends."""
        self._account(service, route, None)

    def _account(self, service: Service | None, route: Route, error: DialError | None) -> None:
        if error is not None and self.events is not None:
            name = service.name if service is not None else None
            self.events.publish(DialFailed(name, route.name, error.failure.value, error.op.value))
        if self.health.record_dial(_key(service), route.name, error):
            self.note_health_change(f"{route.name} failed repeatedly")
            if self.on_failing is not None:
                self.on_failing(service, route)


def _not_applicable(error: DialError) -> bool:
    return error.failure is Failure.NOT_APPLICABLE


def _key(service: Service | None) -> str:
    return service.name if service is not None else ""
