"""The router: which service a destination belongs to, which routes (route.py) may carry it
and in what order, and dialing them as a staggered race.

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

import logging
import ssl
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from transports import Chain, DialError, DialOptions, Endpoint, Failure, Op, Stream
from transports.deadlines import Deadlines
from transports.guard import DestinationRefused
from transports.pt import PtManager
from transports.race import RaceFailed, staggered_race
from transports.resolver import Resolver

from ..config import DENY, Config
from ..events import DialFailed, EventBus, RouteChanged
from ..search.budget import HandshakeBudget
from ..services import Service, ServiceTable
from ..status import RouteView, ServiceView, Tally
from ..subscriptions.pool import Pool, limit, pools_of
from .health import HealthBook
from .route import ROUTE_TIMEOUT, Route, build_route, build_routes, dial_options
from .udp_health import UdpHealth

__all__ = [
    "BY_THE_USER",
    "AllRoutesFailed",
    "CommandRefused",
    "Connection",
    "Denied",
    "Route",
    "Router",
    "RouterObserver",
]

log = logging.getLogger("detour.routing")


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


class RouterObserver(Protocol):
    """What the router tells the one who keeps route health fresh (the monitor)."""

    def service_used(self, service: Service) -> None:
        """A client connection asked for `service`."""

    def route_failing(self, service: Service | None, route: str) -> None:
        """Client connections through `route` keep failing (it just turned failing)."""


class CommandRefused(Exception):
    """A pin/unpin/disable/enable the router's rules do not allow; the message says why and
    `why` names the rule: unknown, not_its_route, disabled, last_route."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


# Ends the reason of a change a person made (a key in the UI): front ends do not announce
# those changes back to whoever made them.
BY_THE_USER = "by the user"


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
        tally: Tally | None = None,
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
        self.tally = tally
        self._pins: dict[str, str] = {}  # service name -> route name
        self._disabled: set[str] = set()  # route names
        self._observers: list[RouterObserver] = []
        # Every route's dial deadline for client connections, on one timer.
        self.deadlines = Deadlines()
        self._by_name = {route.name: route for route in self.routes}
        self._names = tuple(route.name for route in self.routes)
        self._active: dict[str, str | None] = {}
        # The handshake budget a race's later attempts wait for (helper/search/budget.py).
        self.budget = budget
        # What new routes are built with (strategies a search found, helper/search/).
        self.resolver = resolver
        self.options = options or DialOptions()
        self.found: dict[str, list[str]] = {}  # service -> routes a search found for it
        self.udp_health = UdpHealth()  # per (service, route), apart from TCP's
        self.pools: tuple[Pool, ...] = ()  # subscriptions' pools: only the best few raced

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
        tally: Tally | None = None,
        budget: HandshakeBudget | None = None,
    ) -> Router:
        """`pluggable` runs the routes' pluggable transport clients (one is made per `pt:`
        layer without it)."""
        options = dial_options(config, tls, resources, pluggable, budget)
        router = cls(
            build_routes(config, resolver, options),
            ServiceTable(config.services),
            config.default_policy,
            stagger=config.probe.stagger,
            events=events,
            tally=tally,
            budget=budget,
            resolver=resolver,
            options=options,
        )
        router.pools = pools_of(config)
        return router

    def route(self, name: str) -> Route:
        return self._by_name[name]

    def has_route(self, name: str) -> bool:
        return name in self._by_name

    def observe(self, observer: RouterObserver) -> None:
        self._observers.append(observer)

    def unobserve(self, observer: RouterObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    # --- which routes ---------------------------------------------------------------------

    @property
    def pins(self) -> Mapping[str, str]:
        """Service name -> the route the user pinned it to (change with pin/unpin)."""
        return MappingProxyType(self._pins)

    @property
    def disabled(self) -> frozenset[str]:
        """Routes the user turned off (change with disable/enable)."""
        return frozenset(self._disabled)

    def routes_of(self, service: Service) -> tuple[str, ...]:
        """The routes `service` may take at all: its own list, else every route of the
        config in order; then the routes a search found for it."""
        own = tuple(service.routes) if service.routes else self._names
        found = self.found.get(service.name)
        return (*own, *(n for n in found if n not in own)) if found else own

    # --- routes a strategy search found (helper/search/) ----------------------------------

    def build_route(self, name: str, chain: Chain) -> Route:
        """A route that is not (yet) in this router, built as the config's routes are."""
        return build_route(name, chain, ROUTE_TIMEOUT, self.resolver, self.options)

    def add_found(self, service: str, route: Route) -> None:
        """Make `route` a route of this router for `service` only: visible and pinnable like
        any route, tried after the service's own routes until health puts it first."""
        if route.name not in self._by_name:
            self.routes.append(route)
            self._by_name[route.name] = route
        names = self.found.setdefault(service, [])
        if route.name not in names:
            names.append(route.name)

    def forget_found(self, service: str | None = None) -> list[str]:
        """Remove the routes a search found (for `service`, or all); returns their names."""
        services = [service] if service is not None else list(self.found)
        dropped = [name for s in services for name in self.found.pop(s, [])]
        gone = set(dropped) - {n for names in self.found.values() for n in names}
        self.routes = [r for r in self.routes if r.name not in gone]
        for name in gone:
            self._by_name.pop(name, None)
            self._disabled.discard(name)
            self.health.forget(name)
        self._pins = {s: r for s, r in self._pins.items() if r not in gone}
        return dropped

    def candidates(self, service: Service | None) -> list[Route]:
        """The routes a connection may take, in config order (not yet ordered by health)."""
        if service is None:
            return [self._by_name[self.default_policy]] if self.default_policy != DENY else []
        pinned = self._pins.get(service.name)
        if pinned is not None:
            return [self._by_name[pinned]]
        names = [n for n in self.routes_of(service) if n not in self._disabled]
        return [self._by_name[n] for n in limit(self.pools, self.health, service.name, names)]

    def enabled_routes(self, service: Service) -> list[Route]:
        """The routes a probe of `service` goes through: its routes, less disabled ones."""
        return [self._by_name[n] for n in self.routes_of(service) if n not in self._disabled]

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
        candidates = usable or candidates
        if len(candidates) > 1:
            candidates = self.health.order(_key(service), candidates)
        return service, candidates

    def active_route(self, service: Service) -> Route | None:
        """The route a new connection of `service` would try first, if one is known to work."""
        candidates = self.candidates(service)
        if service.name in self._pins:
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

    # --- commands (a person's choices; the UI's keys) -------------------------------------
    # Each enforces the rules, changes the state and announces what it changed (RouteChanged
    # for each service whose active route moved, the reason ending in `by`).

    def pin(self, service: str, route: str, *, by: str = BY_THE_USER) -> None:
        """New connections of `service` take `route` only."""
        found = self._service(service)
        if route not in self._by_name:
            raise CommandRefused(f"there is no route {route}", "unknown")
        if route not in self.routes_of(found):
            raise CommandRefused(f"{route} is not one of {service}'s routes", "not_its_route")
        if route in self._disabled:
            raise CommandRefused(f"{route} is disabled", "disabled")
        self._pins[service] = route
        self.note_health_change(f"pinned {by}")

    def unpin(self, service: str, *, by: str = BY_THE_USER) -> bool:
        """Let detour choose the route of `service` again; False if it was not pinned."""
        if self._pins.pop(service, None) is None:
            return False
        self.note_health_change(f"unpinned {by}")
        return True

    def disable(self, route: str, *, by: str = BY_THE_USER) -> list[str]:
        """Take `route` out of every service's candidates (a pin to it goes with it); refused
        when that would leave a service no route. Returns the services no longer pinned."""
        if route not in self._by_name:
            raise CommandRefused(f"there is no route {route}", "unknown")
        if route in self._disabled:
            return []
        unpinned = [name for name, pinned in self._pins.items() if pinned == route]
        stranded = [
            s.name
            for s in self.services
            if s.name not in self._pins or s.name in unpinned
            if all(n == route or n in self._disabled for n in self.routes_of(s))
        ]
        if stranded:
            raise CommandRefused(
                f"{route} is the last enabled route of {', '.join(stranded)}: not disabled",
                "last_route",
            )
        for name in unpinned:
            del self._pins[name]
        self._disabled.add(route)
        self.note_health_change(f"{route} disabled {by}")
        return unpinned

    def enable(self, route: str, *, by: str = BY_THE_USER) -> bool:
        """Put `route` back; False if it was not disabled."""
        if route not in self._disabled:
            return False
        self._disabled.discard(route)
        self.note_health_change(f"{route} enabled {by}")
        return True

    def adopt(self, old: Router) -> None:
        """Take over what `old` (the router a reload replaces) learnt about routes that did
        not change (same name, same chain), and the user's pins and disabled routes where
        they still make sense."""
        before = {route.name: route.chain for route in old.routes}
        same = {route.name for route in self.routes if before.get(route.name) == route.chain}
        for (service, route), health in old.health.items():
            if route in same:
                self.health.set(service, route, health)
        services = {service.name for service in self.services}
        # Strategies a search found stay routes of this router, with what was learnt.
        for service, found in old.found.items():
            if service not in services:
                continue
            for name in found:
                if name not in old._by_name:
                    continue
                route = self._by_name.get(name) or self.build_route(name, old.route(name).chain)
                self.add_found(service, route)
                if (health := old.health.get(service, name)).ok is not None:
                    self.health.set(service, name, health)
        self._pins.update(
            {s: r for s, r in old._pins.items() if s in services and r in self._by_name}
        )
        self._disabled.update(name for name in old._disabled if name in self._by_name)

    def _service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise CommandRefused(f"there is no service {name}", "unknown")

    # --- status ---------------------------------------------------------------------------

    def route_views(self) -> tuple[RouteView, ...]:
        return tuple(
            RouteView(
                route.name,
                str(route.chain),
                route.chain.splits_client_hello,
                route.chain.telegram_web,
                route.name in self._disabled,
            )
            for route in self.routes
        )

    def service_views(self, probing: Collection[str] = ()) -> tuple[ServiceView, ...]:
        """`probing`: the services a probe is running for."""
        views = []
        for service in self.services:
            active = self.active_route(service)
            views.append(
                ServiceView(
                    service,
                    self.routes_of(service),
                    tuple(route.name for route in self.candidates(service)),
                    self._pins.get(service.name),
                    active.name if active is not None else None,
                    service.name in probing,
                )
            )
        return tuple(views)

    # --- connecting -----------------------------------------------------------------------

    async def connect(self, target: Endpoint, *, exclude: Sequence[str] = ()) -> Connection:
        """Dial `target` through its routes (less those in `exclude`, already tried)."""
        service, ordered = self.plan(target)
        if exclude:
            ordered = [route for route in ordered if route.name not in exclude]
            if not ordered:
                raise AllRoutesFailed(target, service, [])
        if service is not None:
            for observer in self._observers:
                observer.service_used(service)
        errors: dict[str, DialError] = {}
        started = time.monotonic()

        def attempt(route: Route, first: bool):
            async def dial() -> Stream:
                if self.budget is not None and first:  # at once: booked, no await
                    self.budget.book(target.host, self.budget.clock(), client=True, first=True)
                elif self.budget is not None:  # later routes keep the handshake budget
                    await self.budget.take(target.host, client=True)
                try:
                    stream = await route.dial(target, self.deadlines)
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
        if error is not None:
            name = service.name if service is not None else None
            failure, op = error.failure.value, error.op.value
            if self.tally is not None:
                self.tally.dial_failed(name, route.name, failure, op)
            if self.events is not None:
                self.events.publish(DialFailed(name, route.name, failure, op))
        if self.health.record_dial(_key(service), route.name, error):
            self.note_health_change(f"{route.name} failed repeatedly")
            for observer in self._observers:
                observer.route_failing(service, route.name)


def _not_applicable(error: DialError) -> bool:
    return error.failure is Failure.NOT_APPLICABLE


def _key(service: Service | None) -> str:
    return service.name if service is not None else ""
