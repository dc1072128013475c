"""A route: a name, a chain of transports built into a Dialer, and the timeout of one dial
through the whole chain. The router (router.py) chooses among them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from transports import Chain, Dialer, DialError, DialOptions, Endpoint, Failure, Op, Stream
from transports.base import dial_deadline, dial_phase
from transports.chain import base_dialer
from transports.deadlines import Deadlines
from transports.direct import DirectDialer
from transports.resolver import Resolver

from ..config import Config, RouteConfig
from ..subscriptions.guard import guard_nodes

if TYPE_CHECKING:
    import ssl
    from contextlib import AsyncExitStack

    from transports.pt import PtManager

    from ..search.budget import HandshakeBudget

__all__ = ["ROUTE_TIMEOUT", "Route", "build_route", "build_routes", "dial_options"]

# A route's `timeout` when the config does not give one (the routes a search finds).
ROUTE_TIMEOUT = next(f.default for f in fields(RouteConfig) if f.name == "timeout")


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
    # The route's `udp`: False when its proxy is known to refuse UDP ASSOCIATE (a local Tor).
    udp: bool = True

    def __str__(self) -> str:
        return f"{self.name} ({self.chain})"

    def not_applicable(self, target: Endpoint) -> str | None:
        """Why this route cannot carry `target` at all (a `tgws` route and a destination
        that is no Telegram DC), else None. Such a route is skipped, not failed."""
        check = getattr(self.dialer, "not_applicable", None)
        return check(target) if check is not None else None

    async def dial(self, target: Endpoint, deadlines: Deadlines | None = None) -> Stream:
        """Dial `target` through the chain within the route's timeout, in total (on the
        shared timer of `deadlines` when given, transports/deadlines.py).

        Each layer has its own timeouts (the inner safety nets), but along a chain they add
        up: resolving, connecting and every proxy handshake may each take nearly as long. A
        user who sets `timeout = "10s"` means the route, so a dial still running when it ends
        fails with TIMEOUT during the step that was running (`dial_phase`, set by the layers
        in this task), and the router moves on to the next route.
        """
        if self.timeout is None:
            return await self.dialer.dial(target)
        dial_phase.set(Op.CONNECT)
        # The layers see the deadline: one whose own timeout would end no sooner leaves the
        # bounding to it (transports.base.dial_deadline).
        token = dial_deadline.set(time.monotonic() + self.timeout)
        deadline = (
            asyncio.timeout(self.timeout) if deadlines is None else deadlines.after(self.timeout)
        )
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
        finally:
            dial_deadline.reset(token)


def dial_options(
    config: Config,
    tls: ssl.SSLContext | None = None,
    resources: AsyncExitStack | None = None,
    pluggable: PtManager | None = None,
    budget: HandshakeBudget | None = None,
) -> DialOptions:
    """What every route of `config` is built with."""
    return DialOptions(
        hosts=config.dns.hosts,
        dns_timeout=config.dns.timeout,
        tls=tls or config.tls.client_context(),
        resources=resources,
        pluggable=pluggable,
        core_program=config.core.program or None,
        handshakes=budget,  # a front's TLS handshakes keep the same budget
        telegram_dcs=config.telegram.dc_table(),
    )


def build_routes(
    config: Config, resolver: Resolver | None, options: DialOptions | None = None
) -> list[Route]:
    """The configured routes as Dialers (resources that need closing go on options.resources).

    A route's timeout bounds each of its layers (connect, each handshake) as well as the
    whole dial (Route.dial): the layers' own timeouts are the inner safety nets.
    """
    base = options or DialOptions()
    routes = [
        build_route(rc.name, rc.chain, rc.timeout, resolver, base, udp=rc.udp)
        for rc in config.routes
    ]
    # A subscription's nodes may not lead into the user's own network, by name either.
    return guard_nodes(config, routes, resolver)


def build_route(
    name: str,
    chain: Chain,
    timeout: float | None,
    resolver: Resolver | None,
    base: DialOptions,
    *,
    udp: bool = True,
) -> Route:
    """One route as a Dialer, with the options every route of a config shares (also the
    routes a strategy search finds, helper/search/)."""
    dialer = chain.build(
        DialOptions(
            resolver=resolver,
            connect_timeout=timeout,
            handshake_timeout=timeout,
            attempt_delay=base.attempt_delay,
            hosts=base.hosts,
            dns_timeout=base.dns_timeout,
            tls=base.tls,
            resources=base.resources,
            pluggable=base.pluggable,
            core_program=base.core_program,
            handshakes=base.handshakes,
            telegram_dcs=base.telegram_dcs,
        )
    )
    local = base_dialer(dialer)
    own = local.resolver if chain.resolves_locally and isinstance(local, DirectDialer) else None
    return Route(name, chain, dialer, own, timeout, udp)
