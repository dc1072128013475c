"""The UDP side of an `ss://` route (transports/datagram.py's DatagramDialer): one UDP flow
to the server per association, each datagram sealed as a Shadowsocks UDP packet (udp.py)
and what comes back opened; packets that do not open (a wrong key, damage, a replay) are
counted and dropped, as a server's silence would be.

    client datagram --seal--> [packet] --UDP--> server's port --> destination
                    <-open--- [packet] <--UDP-- server        <--
"""

from __future__ import annotations

import logging

from ..base import DialError, Endpoint, Failure, Op
from ..datagram import DirectDatagrams, DirectSession, Receive
from .server import ShadowsocksServer
from .udp import ClientPackets, PacketError

__all__ = ["ShadowsocksDatagrams", "ShadowsocksUdpSession"]

log = logging.getLogger("detour.shadowsocks")


class ShadowsocksDatagrams:
    def __init__(self, server: ShadowsocksServer, base: DirectDatagrams) -> None:
        """`base`: how the server is reached (the route's resolver and source address)."""
        self.server = server
        self.base = base

    def open(self, receive: Receive) -> ShadowsocksUdpSession:
        return ShadowsocksUdpSession(self.server, self.base, receive)

    def __repr__(self) -> str:
        return f"ShadowsocksDatagrams({self.server!r})"


class ShadowsocksUdpSession:
    def __init__(self, server: ShadowsocksServer, base: DirectDatagrams, receive: Receive):
        self.server = server
        self._packets = ClientPackets(server.key)
        self._receive = receive
        self._flow: DirectSession = base.open(self._from_server)
        self.malformed = 0  # packets from the server's port that did not open
        self.dropped = 0  # datagrams that could not be sealed (a name too long)

    def ready(self, target: Endpoint) -> bool:
        return self._flow.ready(self.server.address)

    async def prepare(self, target: Endpoint) -> None:
        try:
            await self._flow.prepare(self.server.address)
        except DialError as exc:
            raise DialError(
                exc.failure, exc.op, f"shadowsocks server {self.server.address}: {exc.detail}"
            ) from None
        if self._flow.closed:
            raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")

    def send(self, payload: bytes, target: Endpoint) -> None:
        try:
            packet = self._packets.seal(target, payload)
        except ValueError:
            self.dropped += 1
            return
        self._flow.send(packet, self.server.address)

    def _from_server(self, packet: bytes, _source: Endpoint) -> None:
        try:
            source, payload = self._packets.open(packet)
        except PacketError as exc:
            self.malformed += 1
            if self.malformed in (1, 10, 100) or not self.malformed % 1000:
                log.info("shadowsocks %s: UDP: %s", self.server.address, exc)
            return
        self._receive(payload, source)

    def close(self) -> None:
        self._flow.close()
