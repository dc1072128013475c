"""The contract between the client server (server.py) and each kind of listener: a
`Listener` says where it listens, who may connect (its `Admission`, which several listeners
may share), what its clients may reach, and how a connection starts -- its `handshake`,
which reads what it needs from the client and returns a `Request`. A `ClientConnection` is
the explicit context a connection's handshake and relay run in.

A Request says where to go and how to answer the client:

    protocol, target            what logs and status views show; where the client goes
    success                     sent to the client once a route has connected
    failure(exc)                the reply for Denied / AllRoutesFailed (b"": reset)
    first_upstream              sent to the destination before relaying (an HTTP head)
    retry_client_hello          a TLS ClientHello may go through the next route (retry.py)
    first_flight                another first flight that may (retry.py: FirstFlight)
    client                      the client's stream from now on (TLS terminated, decrypted)
    upstream(stream)            wraps the route's stream once connected (encrypt toward it)
    serve(conn)                 serves the connection instead (a UDP association, udp.py)

The mixed listener (mixed.py: SOCKS5, SOCKS4a, HTTP), the transparent listener
(transparent.py) and each WhatsApp proxy port (whatsapp.py) are handshakes on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from transports import Endpoint, Stream
from transports.base import IPAddress, IPNetwork
from transports.guard import AddressPolicy

from ..routing import Denied, Router
from ..status import ConnectionView, ListenerView
from .limits import Admission, ConnectionBook
from .relay import RelayStats

if TYPE_CHECKING:
    from ..services import ServiceTable
    from .retry import FirstFlight

__all__ = ["LOOPBACK_NETWORKS", "ClientConnection", "Listener", "Request", "no_reply"]

log = logging.getLogger("detour.proxy")

LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def no_reply(exc: BaseException) -> bytes:
    """A protocol without error replies: the client is reset."""
    return b""


@dataclasses.dataclass(slots=True)
class Request:
    """What a handshake asks of the server."""

    protocol: str  # the label logs and status views show: socks5, http-connect, whatsapp-tls
    target: Endpoint  # where the client wants to go
    success: bytes = b""  # sent to the client once a route has connected
    # The reply to send before closing when the target cannot be reached (Denied,
    # AllRoutesFailed): b"" resets the connection instead.
    failure: Callable[[BaseException], bytes] = no_reply
    first_upstream: bytes = b""  # sent to the destination before relaying (an HTTP head)
    # Whether the client's first bytes, if a TLS ClientHello, may be retried through the
    # next route when the first one swallows it (retry.py).
    retry_client_hello: bool = True
    # Which first flight may be retried so, when not only a TLS ClientHello (retry.py).
    first_flight: FirstFlight | None = None
    # From now on the client's stream is this one (TLS terminated, a stream decrypted).
    client: Stream | None = None
    # Applied to the route's stream once connected (also to one a retry connects).
    upstream: Callable[[Stream], Awaitable[Stream]] | None = None
    # Serves the connection itself instead of connecting to `target` and relaying (a SOCKS5
    # UDP ASSOCIATE, whose TCP connection only holds the association open: udp.py).
    serve: Callable[[ClientConnection], Awaitable[None]] | None = None


class ClientConnection:
    """One client connection, accept to close: the explicit context its handshake and relay
    run in, and its row in the connection table."""

    __slots__ = (
        "client",
        "handshaking",
        "id",
        "key",
        "listener",
        "local",
        "protocol",
        "route",
        "router",
        "service",
        "started",
        "stats",
        "stream",
        "target",
        "task",
    )

    def __init__(
        self,
        id: int,
        client: str,
        *,
        listener: Listener | None = None,
        stream: Stream | None = None,
        router: Router | None = None,
        key: str = "",
        local: bool = False,
        protocol: str = "",
        target: Endpoint | None = None,
        service: str | None = None,
        route: str | None = None,
        started: float | None = None,
    ) -> None:
        self.id = id
        self.client = client  # "host:port" as shown
        self.listener = listener
        self.stream = stream  # the client's stream (a handshake may replace it)
        self.router = router  # the router this connection started with, to its end
        self.key = key  # the client's address, as admission counts it
        self.local = local  # this machine's own user (loopback), not a LAN device
        self.protocol = protocol
        self.target = target
        self.service = service
        self.route = route  # set once connected: the connection is relaying
        self.started = time.monotonic() if started is None else started
        self.stats = RelayStats()
        self.handshaking = True
        self.task: asyncio.Task[None] | None = None

    def view(self) -> ConnectionView:
        return ConnectionView(
            self.id,
            self.listener.kind if self.listener is not None else "",
            self.client,
            self.protocol,
            str(self.target) if self.target is not None else None,
            self.service,
            self.route,
            self.started,
            self.stats.up,
            self.stats.down,
        )


class Listener:
    """A kind of client-facing port: where it listens, who may connect (its admission, which
    several listeners may share), what its clients may reach, and how a connection starts.
    Subclasses write `handshake`; the rest has defaults."""

    backlog = 1024  # pending connections the kernel holds for accept()

    kind = "mixed"  # as status views show it

    def __init__(
        self,
        address: Endpoint,
        admission: Admission,
        *,
        setting: str,
        handshake_timeout: float | None,
        idle_timeout: float,
        policy: AddressPolicy | None = None,
        services_only: bool = False,
    ) -> None:
        """`setting`: the config key named when it cannot listen. `handshake_timeout`: None
        when the handshake bounds itself. `policy`: the addresses clients not on this
        machine may reach (None: the listener's destinations are fixed, nothing to check);
        `services_only`: they may reach only configured services."""
        self.address = address
        self.admission = admission
        self.setting = setting
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.policy = policy
        self.services_only = services_only
        self.local_clients = LOOPBACK_NETWORKS
        self.server: asyncio.Server | None = None

    @property
    def book(self) -> ConnectionBook:
        """The connection counts this listener admits against (shared with its group)."""
        return self.admission.book

    @property
    def sockets(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [sock.getsockname()[:2] for sock in self.server.sockets]

    def views(self) -> list[ListenerView]:
        return [ListenerView(self.kind, host, port) for host, port in self.sockets]

    async def handshake(self, conn: ClientConnection) -> Request | None:
        """Read what the client says on `conn.stream` and return where it goes, or None when
        it went away before asking for anything. Raise ProtocolError (with the protocol's
        error reply) for what cannot be accepted; OSError when the client is gone."""
        raise NotImplementedError

    def timeout_reply(self, conn: ClientConnection) -> bytes | None:
        """What a client still in its handshake when `handshake_timeout` runs out is told
        before the close (None: nothing, the default)."""
        return None

    @property
    def local_clients(self) -> tuple[IPNetwork, ...]:
        """Clients from these addresses are this machine's own user (tests narrow it to tell
        loopback addresses apart)."""
        return self._local_clients

    @local_clients.setter
    def local_clients(self, networks: tuple[IPNetwork, ...]) -> None:
        self._local_clients = networks
        self._local_cache: dict[str, bool] = {}

    def is_local(self, ip: IPAddress | None, key: str) -> bool:
        """Whether a client at `ip` (`key`: its address as text) is this machine's own user.
        Remembered per address: clients are few and come back often."""
        if ip is None:
            return False
        local = self._local_cache.get(key)
        if local is None:
            if len(self._local_cache) >= 4096:
                self._local_cache.clear()
            local = self._local_cache[key] = any(
                ip in net for net in self._local_clients if net.version == ip.version
            )
        return local

    def destination_refusal(self, target: Endpoint, services: ServiceTable) -> str | None:
        """Why a client not on this machine may not go to `target`, or None. What a name
        resolves to is checked later, right before connecting."""
        assert self.policy is not None
        ip = target.ip
        if ip is not None:
            reason = self.policy.refusal(ip)
            if reason is not None:
                return f"{target} is {reason}, which LAN clients may not reach"
        if self.services_only and services.match(target) is None:
            return (
                f"{target} belongs to no configured service, and LAN clients may reach only "
                "services (listen.remote_default)"
            )
        return None

    def unreachable(self, conn: ClientConnection, request: Request, exc: Exception) -> None:
        """Log why `request` cannot be carried: refused (Denied: the destination policy or
        the router's), or every route failed."""
        if isinstance(exc, Denied):
            # A LAN client asking for what it may not have is worth a warning; the machine's
            # own user meeting the default policy is not.
            self.admission.throttled.log(
                "denied",
                logging.INFO if conn.local else logging.WARNING,
                "refused client %s: %s %s: %s",
                conn.client,
                request.protocol,
                request.target,
                exc,
            )
        else:
            log.info("client %s: %s %s: %s", conn.client, request.protocol, request.target, exc)

    async def listen(self, accept: Callable[[], asyncio.Protocol]) -> asyncio.Server:
        """Open the listening socket(s); `accept` makes each connection's protocol."""
        return await asyncio.get_running_loop().create_server(
            accept, host=self.address.host, port=self.address.port, backlog=self.backlog
        )

    def cannot_listen(self, exc: OSError) -> OSError:
        """What start-up reports when the port cannot be opened: which setting and address,
        in a sentence."""
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if isinstance(exc, PermissionError):
            reason += "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
        return OSError(exc.errno, f"{self.setting} {self.address}: {reason}")
