"""Two hops: a relay that reaches its destinations through a chain of its own (`[upstream]
chain`), most often another relay's access key, so an entry relay on an address the network
allows forwards to an exit relay abroad (docs/relay.md "Two hops").

The exit resolves the names and applies its own policy; the entry keeps refusing private
addresses and, with `allow = "services"`, anything not a service (server.py, before it gets
here). A failure through the chain names the second hop, in the relay's reply (what a
client's probe diagnosis shows: "the relay's second hop ... failed") and in the check at
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from transports import DialError, DialOptions, Endpoint, Failure, Op, Stream
from transports.chain import Chain
from transports.fronted.client import FrontDialer
from transports.resolver import Resolver

from ..search.budget import HandshakeBudget
from .config import RelayConfig

__all__ = ["Upstream", "hop_name"]

log = logging.getLogger("detour.relay")


def hop_name(chain: Chain) -> str:
    """The second hop as a diagnosis names it: a relay and its front for `front:`, the chain
    (credentials hidden) otherwise."""
    last = chain.layers[-1]
    if last.name == "front":
        key = last.params["key"]
        return f"{key.host} through {key.front}"
    return f"({chain})"


class Upstream:
    """The chain a relay dials its destinations through."""

    def __init__(self, chain: Chain, config: RelayConfig, resolver: Resolver) -> None:
        self.chain = chain
        self.name = hop_name(chain)
        self.timeout = config.handshake_timeout
        tls = ssl.create_default_context()
        for ca in config.upstream_ca:
            tls.load_verify_locations(cafile=ca)
        self._resources = contextlib.AsyncExitStack()
        self.dialer = chain.build(
            DialOptions(
                resolver=resolver,  # for the chain's own names (a front's)
                connect_timeout=config.handshake_timeout,
                handshake_timeout=config.handshake_timeout,
                tls=tls,
                resources=self._resources,
                handshakes=HandshakeBudget(),  # its fronts' handshakes paced, as detour's
            )
        )

    async def dial(self, client: str, target: Endpoint) -> Stream:
        try:
            return await self.dialer.dial(target)
        except DialError as exc:
            log.warning(
                "relay: %s -> %s: the second hop %s: %s", client, target, self.name, exc.detail
            )
            raise DialError(exc.failure, exc.op, f"second hop {self.name}: {exc.detail}") from None

    async def check(self) -> None:
        """That the second hop can be reached: for a chain that ends in `front:`, a tunnel to
        that relay opens (a multiplexed one stays open for the connections to come).
        DialError naming the hop otherwise. Other chains are not checked (nothing to open
        without a destination)."""
        if not isinstance(self.dialer, FrontDialer):
            return
        try:
            async with asyncio.timeout(2 * self.timeout):
                await self.dialer.check()
        except TimeoutError:
            raise DialError(
                Failure.TIMEOUT, Op.PROXY_HANDSHAKE, f"the second hop {self.name} does not answer"
            ) from None
        except DialError as exc:
            raise DialError(
                exc.failure, exc.op, f"the second hop {self.name} cannot be reached: {exc.detail}"
            ) from None
        log.info("relay: the second hop %s answers", self.name)

    async def aclose(self) -> None:
        """Close the chain's open tunnels."""
        await self._resources.aclose()
