"""The UDP side of an `ss://` or `ssconf://` route (transports/datagram.py's
DatagramDialer): one UDP flow to the server per association, each datagram sealed as a
Shadowsocks UDP packet (udp.py) and what comes back opened; packets that do not open (a
wrong key, damage, a replay) are counted and dropped, as a server's silence would be.

    client datagram --seal--> [packet] --UDP--> server's port --> destination
                    <-open--- [packet] <--UDP-- server        <--

For `ssconf://` the server is the one the Outline key's config names for UDP now (its `udp`
part, else the `tcp` part's server; fetched as for TCP, by the route's OutlineDialer),
looked up when an association starts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..base import DialError, Endpoint, Failure, Op
from ..datagram import DirectDatagrams, DirectSession, Receive
from .server import ShadowsocksServer
from .udp import ClientPackets, PacketError, udp_support

__all__ = ["ShadowsocksDatagrams", "ShadowsocksUdpSession"]

log = logging.getLogger("detour.shadowsocks")


ServerSource = ShadowsocksServer | Callable[[], Awaitable[ShadowsocksServer]]


class ShadowsocksDatagrams:
    def __init__(self, server: ServerSource, base: DirectDatagrams) -> None:
        """`server`: the server, or how to get the current one (ssconf://); `base`: how the
        server is reached (the route's resolver and source address)."""
        self.server = server
        self.base = base

    def open(self, receive: Receive) -> ShadowsocksUdpSession:
        return ShadowsocksUdpSession(self.server, self.base, receive)

    def __repr__(self) -> str:
        return f"ShadowsocksDatagrams({self.server!r})"


class ShadowsocksUdpSession:
    def __init__(self, source: ServerSource, base: DirectDatagrams, receive: Receive):
        self._source = source
        self.server: ShadowsocksServer | None = None
        self._packets: ClientPackets | None = None
        if isinstance(source, ShadowsocksServer):
            self._use(source)
        self._receive = receive
        self._flow: DirectSession = base.open(self._from_server)
        self.malformed = 0  # packets from the server's port that did not open
        self.dropped = 0  # datagrams that could not be sealed (a name too long)

    def _use(self, server: ShadowsocksServer) -> None:
        why = udp_support(server.key)
        if why is not None:
            raise DialError(Failure.PROXY_PROTOCOL_ERROR, Op.CONNECT, f"{server}: {why}")
        self.server, self._packets = server, ClientPackets(server.key)

    def ready(self, target: Endpoint) -> bool:
        return self.server is not None and self._flow.ready(self.server.address)

    async def prepare(self, target: Endpoint) -> None:
        if not isinstance(self._source, ShadowsocksServer):
            server = await self._source()
            if server != self.server:
                self._use(server)
        assert self.server is not None
        address = self.server.address
        try:
            await self._flow.prepare(address)
        except DialError as exc:
            raise DialError(
                exc.failure, exc.op, f"shadowsocks server {address}: {exc.detail}"
            ) from None
        if self._flow.closed:
            raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")

    def send(self, payload: bytes, target: Endpoint) -> None:
        assert self.server is not None and self._packets is not None
        try:
            packet = self._packets.seal(target, payload)
        except ValueError:
            self.dropped += 1
            return
        self._flow.send(packet, self.server.address)

    def _from_server(self, packet: bytes, _source: Endpoint) -> None:
        if self._packets is None:
            return
        try:
            source, payload = self._packets.open(packet)
        except PacketError as exc:
            self.malformed += 1
            if self.malformed in (1, 10, 100) or not self.malformed % 1000:
                log.info("shadowsocks %s: UDP: %s", self.server, exc)
            return
        self._receive(payload, source)

    def close(self) -> None:
        self._flow.close()
