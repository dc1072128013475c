"""The mixed listener: one port that speaks SOCKS5, SOCKS4/4a and HTTP proxy, told apart by
the first byte a client sends (0x05, 0x04, or an HTTP method's first letter).

Flow per connection: access check (allow-list) and limits, before reading a byte ->
handshake within the handshake timeout (authentication included) -> destination policy for
clients not on loopback -> router.connect (routes and their own timeouts) -> the protocol's
success or error reply -> relay until both directions end.

Clients not on loopback ("remote": the LAN of a router) reach only the configured services
unless `listen.remote_default` says otherwise, and never loopback, private or link-local
addresses nor this machine's own, neither as literal addresses nor as what a name resolves
to (transports.guard checks the addresses right before connecting). Loopback clients are the
machine's own user and may go wherever the router's policy lets them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from transports import Endpoint, Failure
from transports.base import IPNetwork
from transports.guard import AddressPolicy, LocalAddresses, guarded, normalize_address
from transports.socks import (
    METHOD_NO_AUTH,
    METHOD_NONE_ACCEPTABLE,
    METHOD_USER_PASS,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    SOCKS5,
)
from transports.tcp import SocketStream, StreamProtocol

from ..config import ListenConfig
from ..events import EventBus
from ..routing import AllRoutesFailed, Connection, Denied, Router
from ..status import ConnectionView
from . import http as http_proto
from . import socks as socks_proto
from .handshake import ProtocolError, read_message
from .limits import ConnectionBook, Limits, ThrottledLog, client_allowed, client_key
from .relay import RelayStats
from .retry import first_exchange
from .serving import RouterSwitch, ServingTasks

__all__ = ["ActiveConnection", "MixedListener"]

log = logging.getLogger("detour.proxy")

_HTTP_FIRST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


@dataclass
class ActiveConnection:
    """A client connection as status views see it."""

    id: int
    client: str
    protocol: str = ""
    target: Endpoint | None = None
    service: str | None = None
    route: str | None = None
    started: float = field(default_factory=time.monotonic)
    stats: RelayStats = field(default_factory=RelayStats)
    listener: str = "mixed"

    def view(self) -> ConnectionView:
        return ConnectionView(
            self.id,
            self.listener,
            self.client,
            self.protocol,
            str(self.target) if self.target is not None else None,
            self.service,
            self.route,
            self.started,
            self.stats.up,
            self.stats.down,
        )


@dataclass
class _Request:
    """What a handshake produced: where to go and how to answer the client."""

    protocol: str
    target: Endpoint
    success: bytes
    failure: Callable[[BaseException], bytes]
    first_upstream_bytes: bytes = b""


class _ClientProtocol(StreamProtocol):
    def __init__(self, listener: MixedListener) -> None:
        super().__init__()
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.listener._accepted(SocketStream(self.transport, self))


class MixedListener(ServingTasks):
    def __init__(
        self,
        config: ListenConfig,
        router: Router,
        *,
        address: Endpoint | None = None,
        events: EventBus | None = None,
        first_answer: float = 0.0,
        book: ConnectionBook | None = None,
        policy: AddressPolicy | None = None,
        connections: dict[int, ActiveConnection] | None = None,
        ids: Iterator[int] | None = None,
    ) -> None:
        """`book` counts connections against the limits (pass one book to several listeners
        to share them); `policy` is what remote clients may reach (default: from config);
        `connections` and `ids`: another listener's table and ids, to share them."""
        self.events = events
        # How long a route may take to answer a TLS client's ClientHello before detour sends
        # it through the next route (0: never retry).
        self.first_answer = first_answer
        self.config = config
        self.switch = RouterSwitch(router)
        self.address = address or config.mixed
        self.connections = connections if connections is not None else {}
        self._users = {user.name: user.password.encode() for user in config.users}
        self._allow = config.allow
        self.book = book or ConnectionBook(listen_limits(config))
        self.policy = policy or AddressPolicy(config.remote_public, LocalAddresses())
        self.throttled = ThrottledLog(log)
        # Clients from these addresses are this machine's own user (tests narrow it to tell
        # loopback addresses apart).
        self.local_clients: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connection ids; listeners that share a connection table share these too.
        self.ids = ids if ids is not None else itertools.count(1)

    @property
    def sockets(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [sock.getsockname()[:2] for sock in self._server.sockets]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientProtocol(self),
            host=self.address.host,
            port=self.address.port,
            backlog=1024,
        )

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted go on."""
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        """Stop accepting and end every connection (cut: the clients see a reset)."""
        self.stop_accepting()
        await self._cut_connections()
        if self._server is not None:
            # Only now: since Python 3.12 this also waits for every connection to close.
            await self._server.wait_closed()

    # --- per connection -------------------------------------------------------------------

    def _accepted(self, stream: SocketStream) -> None:
        peer = stream.get_extra_info("peername")
        client = Endpoint(peer[0], peer[1]) if peer else Endpoint("unknown", 1)
        if client.ip is not None and client.ip.version == 6:
            # An IPv4 client of a dual-stack socket is shown, allowed and counted as IPv4.
            client = Endpoint(str(normalize_address(client.ip)), client.port)
        if self._allow and not client_allowed(client, self._allow):
            self.throttled.log(
                "not-allowed", logging.WARNING, "refused client %s: not in listen.allow", client
            )
            stream.abort()
            return
        key = client_key(client)
        over = self.book.admit(key)
        if over is not None:
            self.throttled.log(
                "limit", logging.WARNING, "refused client %s: at the limit of %s", client, over
            )
            stream.abort()
            return
        conn_id = next(self.ids)
        self._spawn(self._serve(conn_id, client, stream), name=f"detour-conn-{conn_id}")

    async def _serve(self, conn_id: int, client: Endpoint, stream: SocketStream) -> None:
        active = ActiveConnection(conn_id, str(client))
        self.connections[conn_id] = active
        key = client_key(client)
        handshaking = [True]
        self.switch.begin(conn_id)
        try:
            await self._serve_client(active, stream, client, handshaking)
        except asyncio.CancelledError:
            stream.abort()  # cut short (detour is stopping): a reset, never a clean end
            raise
        except Exception:
            log.exception("connection %d from %s: internal error", conn_id, client)
            stream.abort()
        finally:
            del self.connections[conn_id]
            self.switch.end(conn_id)
            self.book.release(key, handshaking=handshaking[0])
            if not stream.is_closing():
                stream.close()

    async def _serve_client(
        self,
        active: ActiveConnection,
        stream: SocketStream,
        client: Endpoint,
        handshaking: list[bool],
    ) -> None:
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                try:
                    request = await self._handshake(stream)
                finally:
                    handshaking[0] = False
                    self.book.handshake_over(client_key(client))
        except TimeoutError:
            log.info(
                "client %s: no complete request within %gs; closed",
                active.client,
                self.config.handshake_timeout,
            )
            stream.close()
            return
        except ProtocolError as exc:
            log.info("client %s: %s", active.client, exc)
            if exc.reply and not stream.is_closing():
                stream.write(exc.reply)
            stream.close()
            return
        except OSError as exc:
            log.debug("client %s: gone during handshake: %s", active.client, exc)
            stream.abort()
            return
        if request is None:
            stream.close()
            return

        active.protocol = request.protocol
        active.target = request.target
        if self._is_local(client):
            await self._connect_and_relay(active, stream, request, local=True)
            return
        refusal = self.remote_refusal(request.target)
        if refusal is None:
            with guarded(request.target.host, self.policy):
                await self._connect_and_relay(active, stream, request)
            return
        self._refuse(active, stream, request, Denied(refusal))

    def _is_local(self, client: Endpoint) -> bool:
        ip = client.ip
        if ip is None:
            return False
        ip = normalize_address(ip)
        return any(ip in net for net in self.local_clients if net.version == ip.version)

    def remote_refusal(self, target: Endpoint) -> str | None:
        """Why a client not on loopback may not go to `target`, or None. What a name resolves
        to is checked later, right before connecting."""
        ip = target.ip
        if ip is not None:
            reason = self.policy.refusal(ip)
            if reason is not None:
                return f"{target} is {reason}, which LAN clients may not reach"
        if self.config.remote_default == "deny" and self.router.services.match(target) is None:
            return (
                f"{target} belongs to no configured service, and LAN clients may reach only "
                "services (listen.remote_default)"
            )
        return None

    def _refuse(
        self,
        active: ActiveConnection,
        stream: SocketStream,
        request: _Request,
        exc: Denied,
        local: bool = False,
    ) -> None:
        # A LAN client asking for what it may not have is worth a warning; the machine's own
        # user meeting the default policy is not.
        self.throttled.log(
            "denied",
            logging.INFO if local else logging.WARNING,
            "refused client %s: %s %s: %s",
            active.client,
            request.protocol,
            request.target,
            exc,
        )
        _answer(stream, request.failure(exc))

    async def _connect_and_relay(
        self, active: ActiveConnection, stream: SocketStream, request: _Request, local: bool = False
    ) -> None:
        try:
            connection = await self.router.connect(request.target)
        except Denied as exc:
            self._refuse(active, stream, request, exc, local)
            return
        except AllRoutesFailed as exc:
            log.info("client %s: %s %s: %s", active.client, request.protocol, request.target, exc)
            _answer(stream, request.failure(exc))
            return
        if request.success and not stream.is_closing():
            stream.write(request.success)
        if not request.first_upstream_bytes:
            retried = await first_exchange(
                stream, connection, self.router, request.target, self.first_answer, active.stats
            )
            if retried is None:
                stream.abort()  # every route failed the client's ClientHello: tell it so
                return
            connection = retried
        await self._relay(active, stream, request, connection)

    async def _relay(
        self,
        active: ActiveConnection,
        stream: SocketStream,
        request: _Request,
        connection: Connection,
    ) -> None:
        active.service = connection.service.name if connection.service else None
        active.route = connection.route.name
        upstream = connection.stream
        if stream.is_closing():
            upstream.abort()
            return
        if request.first_upstream_bytes:
            upstream.write(request.first_upstream_bytes)
            active.stats.up += len(request.first_upstream_bytes)
        await self._relay_accounted(
            active,
            stream,
            connection,
            events=self.events,
            idle_timeout=self.config.idle_timeout,
        )

    # --- handshakes -----------------------------------------------------------------------

    async def _handshake(self, stream: SocketStream) -> _Request | None:
        first = await stream.read(1)
        if not first:
            return None
        stream.unread(first)
        if first[0] == SOCKS5:
            return await self._socks5(stream)
        if first[0] == 0x04:
            return await self._socks4(stream)
        if first[0] in _HTTP_FIRST_BYTES:
            return await self._http(stream)
        raise ProtocolError(f"not SOCKS or HTTP (first byte {first[0]:#04x})")

    def _check_user(self, username: str, password: str) -> bool:
        expected = self._users.get(username)
        # compare_digest on equal-length inputs only avoids a timing hint about the length
        given = password.encode()
        if expected is None:
            hmac.compare_digest(given, given)
            return False
        return hmac.compare_digest(given, expected)

    async def _socks5(self, stream: SocketStream) -> _Request:
        greeting = await read_message(
            stream, socks_proto.parse_socks5_greeting, socks_proto.SOCKS5_GREETING_LIMIT
        )
        if self._users:
            if METHOD_USER_PASS not in greeting.methods:
                raise ProtocolError(
                    "client offers no username/password authentication, which is required",
                    bytes([SOCKS5, METHOD_NONE_ACCEPTABLE]),
                )
            stream.write(bytes([SOCKS5, METHOD_USER_PASS]))
            creds = await read_message(
                stream, socks_proto.parse_socks5_auth, socks_proto.SOCKS5_AUTH_LIMIT
            )
            if not self._check_user(creds.username, creds.password):
                raise ProtocolError(
                    "SOCKS5 login failed (wrong user name or password)", b"\x01\x01"
                )
            stream.write(b"\x01\x00")
        elif METHOD_NO_AUTH in greeting.methods:
            stream.write(bytes([SOCKS5, METHOD_NO_AUTH]))
        elif METHOD_USER_PASS in greeting.methods:
            # No users configured, but the client insists on logging in: accept any login.
            stream.write(bytes([SOCKS5, METHOD_USER_PASS]))
            await read_message(stream, socks_proto.parse_socks5_auth, socks_proto.SOCKS5_AUTH_LIMIT)
            stream.write(b"\x01\x00")
        else:
            raise ProtocolError(
                "client offers no authentication method detour supports",
                bytes([SOCKS5, METHOD_NONE_ACCEPTABLE]),
            )
        request = await read_message(
            stream, socks_proto.parse_socks5_request, socks_proto.SOCKS5_REQUEST_LIMIT
        )
        return _Request(
            "socks5",
            request.target,
            socks_proto.socks5_reply(REP_SUCCEEDED),
            lambda exc: socks_proto.socks5_reply(_socks5_error_code(exc)),
        )

    async def _socks4(self, stream: SocketStream) -> _Request:
        request = await read_message(
            stream, socks_proto.parse_socks4_request, socks_proto.SOCKS4_REQUEST_LIMIT
        )
        if self._users:
            raise ProtocolError(
                "SOCKS4 has no passwords and this listener requires a login; use SOCKS5",
                socks_proto.socks4_reply(False),
            )
        protocol = "socks4a" if request.target.ip is None else "socks4"
        return _Request(
            protocol,
            request.target,
            socks_proto.socks4_reply(True),
            lambda exc: socks_proto.socks4_reply(False),
        )

    async def _http(self, stream: SocketStream) -> _Request:
        try:
            head = await stream.readuntil(b"\r\n\r\n", http_proto.MAX_HEAD)
        except asyncio.LimitOverrunError:
            raise ProtocolError(
                "request head too large", http_proto.error_response(431, "request head too large")
            ) from None
        except asyncio.IncompleteReadError:
            raise ProtocolError("client closed the connection mid-request") from None
        request = http_proto.parse_request_head(head)
        if self._users:
            login = http_proto.check_basic_auth(request)
            if login is None or not self._check_user(*login):
                raise ProtocolError("HTTP proxy login missing or wrong", http_proto.AUTH_REQUIRED)
        if request.is_connect:
            return _Request(
                "http-connect",
                request.destination,
                http_proto.CONNECT_ESTABLISHED,
                _http_error,
            )
        return _Request(
            "http",
            request.destination,
            b"",
            _http_error,
            first_upstream_bytes=http_proto.forwarded_head(request),
        )


def _answer(stream: SocketStream, reply: bytes) -> None:
    """Send the protocol's error reply and close; with no reply to send (a redirected
    connection), reset: the client learns the connection failed, not that it ended."""
    if not reply:
        stream.abort()
        return
    if not stream.is_closing():
        stream.write(reply)
    stream.close()


def listen_limits(config: ListenConfig) -> Limits:
    return Limits(
        config.max_connections,
        config.max_connections_per_client,
        config.max_handshakes,
        config.max_handshakes_per_client,
    )


def _socks5_error_code(exc: BaseException) -> int:
    if isinstance(exc, Denied):
        return REP_NOT_ALLOWED
    if isinstance(exc, AllRoutesFailed):
        failure = exc.primary.failure
        if failure is Failure.CONNECTION_REFUSED:
            return REP_CONNECTION_REFUSED
        if failure is Failure.NETWORK_UNREACHABLE:
            return REP_NETWORK_UNREACHABLE
        if failure in (
            Failure.HOST_UNREACHABLE,
            Failure.TIMEOUT,
            Failure.DNS_NXDOMAIN,
            Failure.DNS_TIMEOUT,
            Failure.DNS_SERVFAIL,
            Failure.DNS_NO_ANSWER,
            Failure.DNS_BOGON,
        ):
            return REP_HOST_UNREACHABLE
    return REP_GENERAL_FAILURE


def _http_error(exc: BaseException) -> bytes:
    if isinstance(exc, Denied):
        return http_proto.error_response(403, str(exc))
    if isinstance(exc, AllRoutesFailed):
        failure = exc.primary.failure
        status = 504 if failure in (Failure.TIMEOUT, Failure.DNS_TIMEOUT) else 502
        return http_proto.error_response(status, exc.describe())
    return http_proto.error_response(502, "cannot reach the destination")
