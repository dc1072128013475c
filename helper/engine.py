"""The running proxy, built from a Config: the router with its routes and services, and the
listeners applications connect to. The headless runner and the terminal UI are two front
ends on the same Engine."""

from __future__ import annotations

import logging

from transports import Endpoint
from transports.resolver import Resolver, StaticResolver, SystemResolver

from .config import Config
from .proxy import MixedListener
from .routing import Router

__all__ = ["Engine"]

log = logging.getLogger("detour")


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        resolver: Resolver | None = None,
        listen: Endpoint | None = None,
    ) -> None:
        self.config = config
        if resolver is None:
            resolver = SystemResolver()
            if config.dns.hosts:
                resolver = StaticResolver(config.dns.hosts, fallback=resolver)
        self.resolver = resolver
        self.router = Router.from_config(config, self.resolver)
        self.listener = MixedListener(config.listen, self.router, address=listen)

    @property
    def mixed_address(self) -> tuple[str, int]:
        """Where the mixed listener actually listens (port 0 in a config means any)."""
        return self.listener.sockets[0]

    async def start(self) -> None:
        await self.listener.start()
        host, port = self.mixed_address
        log.info(
            "listening on %s (SOCKS5, SOCKS4a, HTTP); routes: %s; services: %s",
            Endpoint(host, port),
            ", ".join(str(route) for route in self.router.routes),
            ", ".join(s.name for s in self.router.services) or "none",
        )

    async def stop(self) -> None:
        await self.listener.stop()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
