"""Routes that exist only while something is there: `[[route]] when = "listening"` (a local
Tor's SOCKS port) is a route while the proxy at the start of its chain accepts connections.
The engine asks when it builds a router -- at start and on every reload -- so a Tor started
later appears with the next reload, and one that stopped leaves with it.

The check is one TCP connect to an address written as an IP (no name is looked up), bounded
by a fraction of a second: loopback answers at once, with an accept or a refusal."""

from __future__ import annotations

import dataclasses
import logging
import socket

from transports import Endpoint

from ..config import Config
from ..config.routes import LISTENING, RouteConfig

__all__ = ["listening", "present_routes"]

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 0.25


def listening(endpoint: Endpoint, timeout: float = CHECK_TIMEOUT) -> bool:
    """Whether something accepts TCP connections at `endpoint` (an IP address) now."""
    if endpoint.ip is None:
        return False
    try:
        with socket.create_connection((str(endpoint.ip), endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def first_hop(route: RouteConfig) -> Endpoint | None:
    """The proxy the route's chain starts with (`socks5://127.0.0.1:9050`), if it does."""
    for layer in route.chain.layers:
        if layer.implicit:
            continue
        proxy = layer.params.get("proxy")
        return proxy if isinstance(proxy, Endpoint) else None
    return None


def present_routes(config: Config) -> Config:
    """`config` without the `when = "listening"` routes whose first hop does not answer now
    (and without their names in the services' route lists)."""
    absent = set()
    for route in config.routes:
        if route.when != LISTENING:
            continue
        hop = first_hop(route)
        if hop is None or not listening(hop):
            absent.add(route.name)
        else:
            log.info("route %s: %s is listening, the route is in use", route.name, hop)
    if not absent:
        return config
    routes = tuple(r for r in config.routes if r.name not in absent)
    if not routes:
        return config  # a router needs a route: keep them (each fails with its reason)
    services = tuple(
        dataclasses.replace(s, routes=tuple(n for n in s.routes if n not in absent))
        if s.routes
        else s
        for s in config.services
    )
    policy = config.default_policy
    if policy in absent:
        policy = routes[0].name
    return dataclasses.replace(config, routes=routes, services=services, default_policy=policy)
