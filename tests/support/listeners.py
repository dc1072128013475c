"""detour's own mixed (SOCKS5 and HTTP) listener in the test process, on a free loopback
port: in front of a route a test builds, or as an upstream proxy whose traffic leaves from
another loopback address (the lab's "abroad")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from helper.config import ListenConfig
from helper.proxy import ClientServer, MixedListener
from helper.proxy.mixed import listen_admission
from helper.routing import Route, Router
from helper.services import ServiceTable
from transports import Endpoint, parse_chain
from transports.direct import DirectDialer
from transports.guard import AddressPolicy


@contextlib.asynccontextmanager
async def mixed_listener(router: Router) -> AsyncIterator[int]:
    """A mixed listener on 127.0.0.1 routing by `router`: its port."""
    config = ListenConfig(mixed=Endpoint("127.0.0.1", 0))
    server = ClientServer(router)
    listener = server.add(MixedListener(config, listen_admission(config), AddressPolicy()))
    await server.start()
    try:
        yield listener.sockets[0][1]
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def proxy_leaving_from(address: str) -> AsyncIterator[int]:
    """An upstream SOCKS5 (and HTTP) proxy whose connections and datagrams leave from
    `address`: its port on 127.0.0.1."""
    direct = Route("direct", parse_chain("direct"), DirectDialer(local_address=address))
    async with mixed_listener(Router([direct], ServiceTable([]), "direct")) as port:
        yield port
