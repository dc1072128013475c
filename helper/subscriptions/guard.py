"""A subscription's node may not lead into the user's own network, by name either.

A list from elsewhere could name a server `router.example` that resolves to 192.168.1.1:
the address check on the list (formats.py) sees only addresses written as addresses. So
each node's route (unless its subscription says `allow_private = true`) is wrapped, and a
private, loopback, link-local, unspecified or multicast answer for the server's name fails
the dial (`dns_bogon_error`, naming the name, the address and the setting), as a failure of
that route. When detour itself connects to the server (ss, SOCKS, HTTP nodes), the base
dialer connects only to addresses the same rule allows, checked on the very answer it
connects with (transports/guard.py): one lookup, and a name that would answer differently
the second time (DNS rebinding) gains nothing. A proxy core (vless, vmess, trojan nodes)
resolves the name itself: there detour resolves it first and checks that answer just before
the core starts its connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transports import DialError, Endpoint, Failure, Op, Stream
from transports.chain import CORE_LAYERS
from transports.guard import DestinationRefused, guarded
from transports.resolver import SystemResolver

from .formats import private_address, server_address

__all__ = ["NodeGuard", "guard_nodes"]


class _NodePolicy:
    """transports/guard's policy interface, with the subscriptions' rule of what is local."""

    def refusal(self, address: Any) -> str | None:
        return "a private, loopback or link-local address" if private_address(address) else None

    def allowed(self, addresses: Iterable[Any]) -> list[Any]:
        return [a for a in addresses if self.refusal(a) is None]


class NodeGuard:
    """A node route's dialer, with its server's name checked before and while it dials."""

    def __init__(
        self, inner: Any, route: str, server: Endpoint, resolver: Any, *, resolve_first: bool = True
    ) -> None:
        self.inner = inner
        self.route = route
        self.server = server
        self.resolver = resolver or SystemResolver()
        # False where detour's own dialer connects to the server (its check is on that answer).
        self.resolve_first = resolve_first

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # not_applicable, what the UDP side looks for

    async def dial(self, target: Endpoint) -> Stream:
        host = self.server.host
        if self.resolve_first and self.server.ip is None:
            addresses = await self.resolver.resolve(host)
            local = [a for a in addresses if private_address(a)]
            if local:
                raise self._refused(host, local[0])
        try:
            with guarded(host, _NodePolicy()):  # type: ignore[arg-type]
                return await self.inner.dial(target)
        except DestinationRefused as exc:
            # The node's server, not the client's destination: this route's failure.
            raise self._refused(exc.host or host, exc.address) from None

    def _refused(self, host: str, address: Any) -> DialError:
        what = f"{host} is" if address is None or host == str(address) else (
            f"{host} resolves to {address},"
        )  # fmt: skip
        return DialError(
            Failure.DNS_BOGON,
            Op.CONNECT,  # with DNS_BOGON: a node refused (helper/probe/diagnose.py's words)
            f"{self.route}: {what} a private, loopback or link-local address: a "
            "subscription's node may not lead into your own network (allow_private = true "
            "allows it)",
        )


def guard_nodes(config: Any, routes: list[Any], resolver: Any) -> list[Any]:
    """`routes` with each node route of a subscription that does not allow private
    addresses wrapped in a NodeGuard (the others as they are)."""
    import dataclasses

    guarded_pools = tuple(
        f"{s.name}." for s in getattr(config, "subscriptions", ()) if not s.allow_private
    )
    if not guarded_pools:
        return routes
    out = []
    for route in routes:
        server = server_address(route.chain) if route.name.startswith(guarded_pools) else None
        if server is not None:
            core = route.chain.layers[-1].name in CORE_LAYERS  # resolves the name itself
            guard = NodeGuard(route.dialer, route.name, server, resolver, resolve_first=core)
            route = dataclasses.replace(route, dialer=guard)
        out.append(route)
    return out
