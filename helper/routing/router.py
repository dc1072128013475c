"""The router: which service a destination belongs to, which routes may carry it, and
dialing through them with failover.

Candidates are the service's routes (its own order, or every route in config order), or the
`[default]` policy route for destinations that belong to no service. Routes are tried in
order; the client gets an error only when every candidate has failed.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from transports import Chain, Dialer, DialError, DialOptions, Endpoint, Stream
from transports.resolver import Resolver

from ..config import DENY, Config
from ..services import Service, ServiceTable

__all__ = ["AllRoutesFailed", "Connection", "Denied", "Route", "Router"]

log = logging.getLogger("detour.routing")


@dataclass(frozen=True)
class Route:
    name: str
    chain: Chain
    dialer: Dialer

    def __str__(self) -> str:
        return f"{self.name} ({self.chain})"


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


class Router:
    def __init__(
        self, routes: Sequence[Route], services: ServiceTable, default_policy: str
    ) -> None:
        self.routes = list(routes)
        self.services = services
        self.default_policy = default_policy
        self._by_name = {route.name: route for route in self.routes}

    @classmethod
    def from_config(
        cls,
        config: Config,
        resolver: Resolver | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        resources: contextlib.AsyncExitStack | None = None,
    ) -> Router:
        routes = [
            Route(
                rc.name,
                rc.chain,
                rc.chain.build(
                    DialOptions(
                        resolver=resolver,
                        connect_timeout=rc.timeout,
                        handshake_timeout=rc.timeout,
                        attempt_delay=0.25,
                        hosts=config.dns.hosts,
                        tls=tls,
                        resources=resources,
                    )
                ),
            )
            for rc in config.routes
        ]
        return cls(routes, ServiceTable(config.services), config.default_policy)

    def plan(self, target: Endpoint) -> tuple[Service | None, list[Route]]:
        """The service `target` belongs to and the routes to try, best first."""
        service = self.services.match(target)
        if service is None:
            if self.default_policy == DENY:
                raise Denied(
                    f"{target} belongs to no configured service and the default policy is deny"
                )
            return None, [self._by_name[self.default_policy]]
        if service.routes:
            return service, [self._by_name[name] for name in service.routes]
        return service, list(self.routes)

    async def connect(self, target: Endpoint) -> Connection:
        service, candidates = self.plan(target)
        attempts: list[tuple[str, DialError]] = []
        for route in candidates:
            try:
                stream = await route.dialer.dial(target)
            except DialError as exc:
                log.debug("%s via %s failed: %s", target, route.name, exc)
                attempts.append((route.name, exc))
                continue
            return Connection(stream, route, service)
        raise AllRoutesFailed(target, service, attempts)
