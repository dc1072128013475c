"""UDP through a proxy core: datagrams to the core's SOCKS5 inbound with UDP ASSOCIATE, which
the core carries to the server inside the link's protocol (VLESS and VMess UDP, Trojan's UDP
ASSOCIATE command), and the server sends on.

    detour --SOCKS5 UDP--> core (child, 127.0.0.1) ==vless/vmess/trojan==> server --> DST

It is the upstream-SOCKS5 path (transports/datagram.py's Socks5Session) with one difference:
the core is a child that may not be running yet or may have been restarted (a new port and
login each start), so every association asks the running core for its inbound first
(CoreDialer.socks, which starts it on first use). When the core ends, its control connection
closes and the next datagram associates with the core running then.
"""

from __future__ import annotations

from ..datagram import Receive, Socks5Session
from .dialer import CoreDialer

__all__ = ["CoreDatagrams", "CoreSession"]


class CoreDatagrams:
    """The UDP side of a vless/vmess/trojan layer."""

    def __init__(self, core: CoreDialer) -> None:
        self.core = core

    def open(self, receive: Receive) -> CoreSession:
        return CoreSession(self.core, receive)

    def __repr__(self) -> str:
        return f"CoreDatagrams({self.core.link!r})"


class CoreSession(Socks5Session):
    def __init__(self, core: CoreDialer, receive: Receive) -> None:
        self._core = core
        super().__init__(None, receive)  # type: ignore[arg-type]  # set at each association

    async def _associate(self) -> None:
        self._upstream, _run = await self._core.socks()
        await super()._associate()
