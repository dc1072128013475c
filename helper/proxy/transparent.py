"""The transparent listener (`[listen] transparent`, Linux): connections that nftables or
iptables redirected to detour (`redirect to :1090`), from devices that know nothing of a proxy.

The destination the device meant is recovered from the kernel's connection tracking with
SO_ORIGINAL_DST, then the connection is routed like any other: the service is matched by the
destination address. A device that reaches a service by name gives the name away in its first
bytes -- the server name (SNI) of a TLS ClientHello, or an HTTP request's Host -- so detour
waits briefly for them (PEEK_WAIT, at most PEEK_LIMIT bytes) and, when the name belongs to a
configured service, routes by the name instead, which lets domain-matched services and routes
that need the name (tlsfrag:sni, upstream proxies, fronting) work. A name that matches no
service is ignored: the connection goes to the address it was sent to, so a device cannot
reach other places by writing another name.

There is no login on a redirected connection, so a transparent listener that other machines
can reach needs `listen.allow`; the limits and the destination policy are the mixed
listener's. A connection whose original destination is this listener itself (someone
connecting to the port directly, or a redirect rule that loops) is refused. Its handshake is
all it adds to the client server (server.py).

    sockaddr_in  (SOL_IP, SO_ORIGINAL_DST = 80):          family:2 port:2 addr:4  zero:8
    sockaddr_in6 (SOL_IPV6, IP6T_SO_ORIGINAL_DST = 80):   family:2 port:2 flow:4 addr:16 scope:4
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import sys
from typing import Any

from transports import Endpoint, Stream
from transports.guard import AddressPolicy, LocalAddresses, normalize_address
from transports.tlsfrag import server_name_span

from ..config import ListenConfig
from .handshake import ProtocolError
from .limits import Admission
from .listener import ClientConnection, Listener, Request

__all__ = [
    "TransparentListener",
    "name_in_first_bytes",
    "original_destination",
    "parse_original_destination",
]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
PEEK_WAIT = 1.0  # seconds to wait for a client's first bytes (a server-first protocol waits)
PEEK_LIMIT = 16 * 1024  # a ClientHello with post-quantum key shares fits

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_METHOD = re.compile(rb"^[A-Z]{3,10} ")


def parse_original_destination(raw: bytes) -> Endpoint:
    """A sockaddr_in or sockaddr_in6 from SO_ORIGINAL_DST as an Endpoint."""
    if len(raw) < 8:
        raise ValueError(f"original destination too short ({len(raw)} bytes)")
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(raw[4:8])
    elif family == socket.AF_INET6 and len(raw) >= 24:
        address = normalize_address(ipaddress.IPv6Address(raw[8:24]))
    else:
        raise ValueError(f"original destination of unknown family {family}")
    if port == 0:
        raise ValueError("original destination has port 0")
    return Endpoint(str(address), port)


def original_destination(sock: Any) -> Endpoint:
    """Where a redirected connection was going, from the kernel's connection tracking.
    Raises OSError when the kernel has none (the connection was not redirected and
    connection tracking is not running)."""
    if sock.family == socket.AF_INET6:
        try:
            return parse_original_destination(sock.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28))
        except OSError:
            pass  # an IPv4 client on a dual-stack socket: its entry is an IPv4 one
    return parse_original_destination(sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16))


def first_bytes_complete(data: bytes) -> bool:
    """Whether there is nothing more to wait for: a whole TLS record, a whole HTTP head, or
    bytes that are neither."""
    if not data:
        return False
    if data[0] == 0x16:
        if len(data) < 5:
            return False
        return len(data) >= 5 + int.from_bytes(data[3:5], "big")
    if _METHOD.match(data[:11]):
        return b"\r\n\r\n" in data
    prefix = data[:10]
    # Still only capital letters: could be the start of an HTTP method.
    return not (len(data) < 11 and prefix.isalpha() and prefix.isupper())


def name_in_first_bytes(data: bytes) -> str | None:
    """The host name a client's first bytes name: a TLS ClientHello's SNI, or an HTTP
    request's Host header (without its port); None if there is none or it is not a name."""
    name: str | None = None
    if data[:1] == b"\x16" and len(data) >= 5:
        hello = data[5 : 5 + int.from_bytes(data[3:5], "big")]
        span = server_name_span(hello)
        if span is not None:
            name = hello[span[0] : span[1]].decode("ascii", "replace")
    elif _METHOD.match(data[:11]):
        head = data.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"host":
                host = value.strip().decode("ascii", "replace")
                if host.startswith("["):
                    return None  # an IPv6 literal: no name
                name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
                break
    if name is None:
        return None
    name = name.lower().rstrip(".")
    if not _HOSTNAME.match(name) or _is_ip(name):
        return None
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class TransparentListener(Listener):
    """Takes redirected connections; counts against the mixed listener's `admission` and
    shares its destination `policy`."""

    kind = "transparent"

    def __init__(
        self,
        config: ListenConfig,
        admission: Admission,
        policy: AddressPolicy,
        *,
        address: Endpoint | None = None,
    ) -> None:
        if address is None:
            if config.transparent is None:
                raise ValueError("listen.transparent is not set")
            address = config.transparent
        super().__init__(
            address,
            admission,
            setting="listen.transparent",
            handshake_timeout=config.handshake_timeout,
            idle_timeout=config.idle_timeout,
            policy=policy,
            services_only=config.remote_default == "deny",
        )
        # This machine's addresses, to tell a loop: the policy's cache where it has one.
        self._local = policy.local or LocalAddresses()

    async def listen(self, accept) -> asyncio.Server:
        """`[::]` takes both families' redirects on one socket (IPv4 ones as mapped
        addresses), since there is one `transparent` key; any other address, its own."""
        ip = self.address.ip
        if ip is None or ip.version != 6 or not ip.is_unspecified:
            return await super().listen(accept)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", self.address.port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return await asyncio.get_running_loop().create_server(accept, sock=sock)

    async def handshake(self, conn: ClientConnection) -> Request | None:
        stream = conn.stream
        sock = stream.get_extra_info("socket")
        try:
            original = original_destination(sock)
        except (OSError, ValueError) as exc:
            raise ProtocolError(
                f"not a redirected connection (no original destination: {exc})"
            ) from None
        if self._is_loop(original, stream):
            raise ProtocolError(f"refused a loop: the original destination {original} is detour")
        first = await self._peek(stream)
        target = original
        name = name_in_first_bytes(first) if first else None
        if name is not None:
            by_name = Endpoint(name, original.port)
            if conn.router.services.match(by_name) is not None:
                target = by_name
        return Request("transparent", target)

    def _is_loop(self, original: Endpoint, stream: Stream) -> bool:
        here = stream.get_extra_info("sockname")
        ports = {port for _, port in self.sockets}
        if here:
            ports.add(here[1])
        if original.port not in ports:
            return False
        ip = original.ip
        return ip is not None and (ip.is_loopback or ip.is_unspecified or ip in self._local)

    async def _peek(self, stream: Stream) -> bytes:
        data = b""
        try:
            async with asyncio.timeout(min(PEEK_WAIT, self.handshake_timeout or PEEK_WAIT)):
                while len(data) < PEEK_LIMIT and not first_bytes_complete(data):
                    chunk = await stream.read(PEEK_LIMIT - len(data))
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            pass  # a client that waits for the server: route by address
        stream.unread(data)
        return data
