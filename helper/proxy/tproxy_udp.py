"""Transparent UDP on a Linux router (nftables TPROXY): a LAN device's datagrams to a
service's address reach detour with no proxy setting on the device, go through the route
the service's UDP takes, and the answers go back from the service's own address.

    phone --UDP to 198.51.100.7:3478--> router: nftables `tproxy to :PORT` (and a policy
      route that makes the marked packets local) --> this socket (IP_TRANSPARENT), which
      reads the original destination from IP_ORIGDSTADDR
    detour --route's DatagramSession (transports/datagram.py)--> the service
    answer --> a socket bound to 198.51.100.7:3478 (IP_TRANSPARENT) --> phone

IPv6 is the same with IPV6_TRANSPARENT and IPV6_ORIGDSTADDR (nftables `tproxy ip6 to`). An
IPv6 address (`[::]:1091`) makes one dual-stack socket for both families (IPv4 devices
appear as ::ffff:a.b.c.d and are treated as the IPv4 addresses they are); an IPv4 address,
an IPv4-only socket. Answers leave from a socket of the service address's own family.

Each LAN device (address and port) gets a `TransparentClient`: an association without a
TCP connection (udp.py's UdpAssociation, the destination handling and its counters and
limits), which ends after `listen.udp_idle_timeout` without a datagram either way. Who may
send is the `[listen]` allow-list; where to is the destination policy for LAN clients (the
configured services only unless `listen.remote_default` says otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING

from transports import Endpoint

from .listener import ClientConnection
from .udp import UdpAssociation, UdpBudget

if TYPE_CHECKING:
    from .listener import Listener
    from .server import ClientServer

__all__ = ["TransparentUdp"]

log = logging.getLogger("detour.udp")

SOL_IP = getattr(socket, "SOL_IP", 0)
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_RECVORIGDSTADDR = 20  # also IP_ORIGDSTADDR, the control message's type (linux/in.h)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)  # linux/in6.h
IPV6_RECVORIGDSTADDR = 74  # also IPV6_ORIGDSTADDR, the control message's type
IDLE = 120.0  # reply sockets close after this long unused (devices: limits.idle)
READS_PER_WAKEUP = 64  # datagrams read per readiness event, so one flood cannot hog the loop


def original_destination(ancillary: list[tuple[int, int, bytes]]) -> Endpoint | None:
    """The destination a TPROXY'd datagram was sent to: a sockaddr_in in IP_ORIGDSTADDR, or
    a sockaddr_in6 in IPV6_ORIGDSTADDR.

        sockaddr_in:  family(2) port(2, network order) addr(4) zero(8)
        sockaddr_in6: family(2) port(2, network order) flowinfo(4) addr(16) scope_id(4)
    """
    for level, kind, data in ancillary:
        if level == SOL_IP and kind == IP_RECVORIGDSTADDR and len(data) >= 8:
            (port,) = struct.unpack_from("!H", data, 2)
            return Endpoint(socket.inet_ntoa(data[4:8]), port)
        if level == SOL_IPV6 and kind == IPV6_RECVORIGDSTADDR and len(data) >= 24:
            (port,) = struct.unpack_from("!H", data, 2)
            address = ipaddress.IPv6Address(data[8:24])
            mapped = address.ipv4_mapped
            return Endpoint(str(mapped) if mapped is not None else str(address), port)
    return None


def plain_host(host: str) -> str:
    """An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) as the IPv4 address."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class TransparentClient(UdpAssociation):
    """One LAN device's datagrams (module docstring): answers go from the address each came
    from, through the server's reply sockets."""

    def __init__(self, server: TransparentUdp, conn: ClientConnection, addr: tuple) -> None:
        super().__init__(conn, server.listener, server.budget, addr[1])
        self.server = server
        self.addr = addr
        self.used = time.monotonic()

    def deliver(self, payload: bytes, source: Endpoint) -> bool:
        self.used = time.monotonic()
        return self.server.reply(payload, source, self.addr)


class TransparentUdp:
    """The transparent UDP socket and its devices (module docstring)."""

    def __init__(self, address: Endpoint, server: ClientServer, listener: Listener) -> None:
        """`listener`: whose allow-list, destination policy and throttled log apply (the
        mixed listener's, as for the transparent TCP listener)."""
        self.address = address
        self.server = server
        self.listener = listener
        # The mixed listener's UDP limits ([listen] udp_*), counted apart.
        udp = getattr(listener, "udp", None)
        self.budget = UdpBudget(udp.limits if isinstance(udp, UdpBudget) else None)
        self.clients: dict[tuple, TransparentClient] = {}
        self._replies: dict[Endpoint, tuple[socket.socket, float]] = {}
        self._socket: socket.socket | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)

    # --- life -----------------------------------------------------------------------------

    def start(self) -> None:
        v6 = ":" in self.address.host
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if v6:
                # One socket for both families: IPv4 TPROXY finds a dual-stack socket too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
                sock.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
            sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address.host, self.address.port))
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            if isinstance(exc, PermissionError):
                reason += "; transparent sockets need root or CAP_NET_ADMIN"
            raise OSError(exc.errno, f"listen.transparent_udp {self.address}: {reason}") from None
        sock.setblocking(False)
        self._socket = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable)
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    @property
    def bound(self) -> Endpoint:
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        return Endpoint(plain_host(host), port)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._socket is not None:
            asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        for client in list(self.clients.values()):
            self._end(client)
        for sock, _ in self._replies.values():
            sock.close()
        self._replies.clear()

    def _end(self, client: TransparentClient) -> None:
        self.clients.pop(client.addr, None)
        self.budget.associations.discard(client)
        client.close()
        self.budget.ended.add(client.counters)
        if client.counters.up or client.counters.dropped:
            client._log_end()

    @property
    def _sweep_every(self) -> float:
        idle = self.budget.limits.idle
        return min(idle, IDLE) / 4 if idle else IDLE / 4

    def _sweep(self) -> None:
        now = time.monotonic()
        idle = self.budget.limits.idle
        if idle:
            for client in list(self.clients.values()):
                if client.used < now - idle:
                    self.budget.idle_ended += 1
                    self._end(client)
        reply_idle = min(idle, IDLE) if idle else IDLE
        for source, (sock, used) in list(self._replies.items()):
            if used < now - reply_idle:
                sock.close()
                del self._replies[source]
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    # --- device -> service ----------------------------------------------------------------

    def _readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        for _ in range(READS_PER_WAKEUP):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("transparent UDP socket: %s", exc)
                return
            self._received(data, ancillary, addr)

    def _received(self, data: bytes, ancillary, addr: tuple) -> None:
        target = original_destination(ancillary)
        client = self.clients.get(addr)
        if client is None:
            client = self._admit(addr)
            if client is None:
                return
        client.used = time.monotonic()
        if target is None or target.port == 0:
            client._drop("malformed", "no original destination (not redirected by TPROXY?)")
            return
        if target == self.bound:
            client._drop("refused", "sent to the transparent port itself")
            return
        client.forward(data, target)

    def _admit(self, addr: tuple) -> TransparentClient | None:
        host = plain_host(addr[0])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        client_text = str(Endpoint(host, addr[1]))
        allow = self.listener.admission.allow
        if allow and not any(ip in net for net in allow if net.version == ip.version):
            self.listener.admission.throttled.log(
                "udp-not-allowed", logging.WARNING,
                "refused UDP from %s: not in %s", client_text, self.listener.admission.allow_key,
            )  # fmt: skip
            return None
        limit = self.budget.limits.destinations
        if limit and len(self.clients) >= limit:
            self.budget.refused += 1
            self.listener.admission.throttled.log(
                "udp-limit", logging.WARNING,
                "refused UDP from %s: %d devices' flows already", client_text, limit,
            )  # fmt: skip
            return None
        per_client = self.budget.limits.per_client
        if per_client and self.budget.open_from(host) >= per_client:
            self.budget.refused += 1
            self.listener.admission.throttled.log(
                "udp-per-client", logging.WARNING,
                "refused UDP from %s: %d flows from %s open already "
                "(listen.udp_associations_per_client)", client_text, per_client, host,
            )  # fmt: skip
            return None
        conn = ClientConnection(
            next(self._ids),
            client_text,
            listener=self.listener,
            router=self.server.router,
            key=host,
            local=self.listener.is_local(ip, host),
            protocol="udp-transparent",
        )
        client = self.clients[addr] = TransparentClient(self, conn, addr)
        self.budget.associations.add(client)
        self.budget.opened += 1
        return client

    # --- service -> device ----------------------------------------------------------------

    def reply(self, payload: bytes, source: Endpoint, to: tuple) -> bool:
        """Send `payload` to the device at `to` from `source` (the service's address), from
        a socket of the source's family."""
        source = Endpoint(plain_host(source.host), source.port)
        v6 = ":" in source.host
        to = (to[0], to[1]) if v6 else (plain_host(to[0]), to[1])
        entry = self._replies.get(source)
        if entry is None:
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if v6:
                    sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
                else:
                    sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((source.host, source.port))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
        else:
            sock = entry[0]
        self._replies[source] = (sock, time.monotonic())
        try:
            sock.sendto(payload, to)
        except BlockingIOError:
            return False  # the socket's buffer is full: lost, as on a congested link
        return True
