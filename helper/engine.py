"""The running proxy, built from a Config: the router with its routes and services, the
prober and the monitor that keep route health fresh, the event stream, and the listeners
applications connect to. The headless runner and the terminal UI are two front ends on the
same Engine."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from transports import Endpoint
from transports.pt import PtManager
from transports.resolver import Resolver, StaticResolver

from .config import Config
from .events import EventBus
from .probe.probe import Prober
from .proxy import MixedListener, TransparentListener
from .proxy.whatsapp import WhatsAppProxy
from .routing import Router
from .routing.monitor import HealthMonitor
from .routing.state import HealthStore, network_id, state_dir

if TYPE_CHECKING:
    from .api import StatusApi

__all__ = ["Engine"]

log = logging.getLogger("detour")


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        resolver: Resolver | None = None,
        listen: Endpoint | None = None,
        store: HealthStore | None = None,
        network: str | None = None,
        probe_on_start: bool = True,
    ) -> None:
        """`store` remembers route health per network (None: nothing remembered); `network`
        names the network (default: detected from the gateway and subnet)."""
        self.config = config
        self.events = EventBus()
        # Resolvers that keep connections (DoH) are closed when the engine stops.
        self._resources = contextlib.AsyncExitStack()
        tls = config.tls.client_context()
        if resolver is None:
            resolver = config.dns.resolver.build(tls)
            close = getattr(resolver, "aclose", None)
            if close is not None:
                self._resources.push_async_callback(close)
            if config.dns.hosts:
                # Names in [dns] hosts never reach the resolver (nor its bogon check).
                resolver = StaticResolver(config.dns.hosts, fallback=resolver)
        self.resolver = resolver
        # Pluggable transport clients (`pt:` routes) start on first use, keep their state
        # under the state directory, and stop with the engine.
        self.pluggable = PtManager(state_dir() / "pt")
        self._resources.push_async_callback(self.pluggable.aclose)
        self.router = Router.from_config(
            config,
            self.resolver,
            tls=tls,
            resources=self._resources,
            events=self.events,
            pluggable=self.pluggable,
        )
        self.prober = Prober(
            timeout=config.probe.timeout,
            tls=tls,
            min_rate=config.probe.min_rate,
            compare_resolver=_encrypted_resolver(self.router),
            events=self.events,
        )
        self.monitor = HealthMonitor(
            self.router,
            self.prober,
            interval=config.probe.interval,
            store=store,
            network=network_id() if network is None and store is not None else (network or ""),
        )
        self._probe_on_start = probe_on_start
        self.listener = MixedListener(
            config.listen,
            self.router,
            address=listen,
            events=self.events,
            first_answer=config.probe.first_answer,
        )
        # Redirected connections share the mixed listener's limits, destination policy and
        # connection table (so every status view shows them).
        self.transparent: TransparentListener | None = None
        if config.listen.transparent is not None:
            self.transparent = TransparentListener(
                config.listen,
                self.router,
                events=self.events,
                first_answer=config.probe.first_answer,
                book=self.listener.book,
                policy=self.listener.policy,
            )
            self.transparent.connections = self.listener.connections
            self.transparent._ids = self.listener._ids
        # The status API (off unless [api] listen is set) subscribes to the events now, so
        # its metrics count the first probes too.
        self.api: StatusApi | None = None
        if config.api.listen is not None:
            from .api import StatusApi

            self.api = StatusApi(self, config.api)
        # [whatsapp_proxy]: its connections go into the mixed listener's table, so every
        # status view shows them.
        self.whatsapp: WhatsAppProxy | None = None
        if config.whatsapp_proxy is not None:
            self.whatsapp = WhatsAppProxy(
                config.whatsapp_proxy,
                self.router,
                allow=config.listen.allow,
                state=state_dir() / "whatsapp-proxy",
                events=self.events,
                connections=self.listener.connections,
                ids=self.listener._ids,
                first_answer=config.probe.first_answer,
            )

    @property
    def mixed_address(self) -> tuple[str, int]:
        """Where the mixed listener actually listens (port 0 in a config means any)."""
        return self.listener.sockets[0]

    async def start(self) -> None:
        if self.api is not None:
            await self.api.start()
        try:
            await self.listener.start()
            try:
                if self.transparent is not None:
                    await self.transparent.start()
                    log.info("transparent listener on %s", Endpoint(*self.transparent.sockets[0]))
                if self.whatsapp is not None:
                    await self.whatsapp.start()
            except BaseException:
                if self.transparent is not None:
                    await self.transparent.stop()
                await self.listener.stop()
                raise
        except BaseException:
            if self.api is not None:
                await self.api.stop()
            raise
        await self.monitor.start(probe_now=self._probe_on_start)
        host, port = self.mixed_address
        log.info(
            "listening on %s (SOCKS5, SOCKS4a, HTTP); routes: %s; services: %s",
            Endpoint(host, port),
            ", ".join(str(route) for route in self.router.routes),
            ", ".join(s.name for s in self.router.services) or "none",
        )

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.stop()
        await self.monitor.stop()
        if self.whatsapp is not None:
            await self.whatsapp.stop()
        if self.transparent is not None:
            await self.transparent.stop()
        await self.listener.stop()
        await self._resources.aclose()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _encrypted_resolver(router: Router) -> Resolver | None:
    """A route's encrypted resolver (DoH, DoT), to check the network's DNS answers against."""
    for route in router.routes:
        if route.resolver is not None and route.chain.resolver_kind in ("doh", "dot"):
            return route.resolver
    return None
