"""The mixed listener: one port that speaks SOCKS5, SOCKS4/4a and HTTP proxy, told apart by
the first byte a client sends (0x05, 0x04, or an HTTP method's first letter). Its handshake
(login included) is all it adds to the client server (server.py), which admits, routes,
answers and relays.

Clients not on loopback ("remote": the LAN of a router) reach only the configured services
unless `listen.remote_default` says otherwise, and never loopback, private or link-local
addresses nor this machine's own, neither as literal addresses nor as what a name resolves
to (transports.guard checks the addresses right before connecting). Loopback clients are the
machine's own user and may go wherever the router's policy lets them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from transports import Endpoint, Failure, Stream
from transports.guard import AddressPolicy
from transports.socks import (
    CMD_UDP_ASSOCIATE,
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
from transports.wire import HeadError

from .. import http_server  # (a module: it imports .http, whose package is this one)
from ..config import ListenConfig
from ..routing import AllRoutesFailed, Denied
from . import http as http_proto
from . import socks as socks_proto
from .handshake import ProtocolError, read_message
from .limits import Admission, listen_limits
from .listener import ClientConnection, Listener, Request
from .udp import UdpAssociation, UdpBudget, UdpLimits

__all__ = ["MixedListener", "listen_admission"]

log = logging.getLogger("detour.proxy")

LOGIN_PATIENCE = 10.0  # without a handshake timeout: how long a login may wait its turn
_HTTP_FIRST_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SOCKS5_SUCCESS = socks_proto.socks5_reply(REP_SUCCEEDED)
_SOCKS4_SUCCESS = socks_proto.socks4_reply(True)
_SOCKS4_FAILURE = socks_proto.socks4_reply(False)


def listen_admission(config: ListenConfig) -> Admission:
    """Who may use the `[listen]` listeners (mixed and transparent, counted together)."""
    return Admission(listen_limits(config), config.allow, logger=log)


class MixedListener(Listener):
    kind = "mixed"

    def __init__(
        self,
        config: ListenConfig,
        admission: Admission,
        policy: AddressPolicy,
        *,
        address: Endpoint | None = None,
    ) -> None:
        """`admission`: the allow-list and limits it counts against (shared with the
        transparent listener); `policy`: what clients not on this machine may reach."""
        super().__init__(
            address or config.mixed,
            admission,
            setting="listen.mixed",
            handshake_timeout=config.handshake_timeout,
            idle_timeout=config.idle_timeout,
            policy=policy,
            services_only=config.remote_default == "deny",
        )
        self._users = {user.name: user.password.encode() for user in config.users}
        # Every UDP association of this listener: limits, datagrams in flight, counters.
        self.udp = UdpBudget(UdpLimits.from_listen(config))

    async def handshake(self, conn: ClientConnection) -> Request | None:
        stream = conn.stream
        first = await stream.read(1)
        if not first:
            return None
        stream.unread(first)
        if first[0] == SOCKS5:
            return await self._socks5(conn, stream)
        if first[0] == 0x04:
            return await self._socks4(stream)
        if first[0] in _HTTP_FIRST_BYTES:
            return await self._http(conn, stream)
        raise ProtocolError(f"not SOCKS or HTTP (first byte {first[0]:#04x})")

    def timeout_reply(self, conn: ClientConnection) -> bytes | None:
        # A client mid-head when the handshake's deadline ran out is told so before the
        # close (RFC 9110 §15.5.9), as the status API does; SOCKS has no such reply.
        return http_proto.REQUEST_TIMEOUT if conn.protocol == "http" else None

    def _check_user(self, username: str, password: str) -> bool:
        expected = self._users.get(username)
        # compare_digest on equal-length inputs only avoids a timing hint about the length
        given = password.encode()
        if expected is None:
            hmac.compare_digest(given, given)
            return False
        return hmac.compare_digest(given, expected)

    async def _login(
        self, conn: ClientConnection, what: str, username: str | None, password: str
    ) -> bool:
        """Check a login in its turn: wrong ones from one address slow it down (logins.py),
        and their log lines are throttled (the failure is logged here, not again)."""
        timeout = self.handshake_timeout or LOGIN_PATIENCE
        return await self.admission.login(
            conn.client,
            conn.key,
            what,
            lambda: username is not None and self._check_user(username, password),
            patience=timeout / 2,
        )

    async def _socks5(self, conn: ClientConnection, stream: Stream) -> Request:
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
            if not await self._login(conn, "SOCKS5 login", creds.username, creds.password):
                raise ProtocolError(
                    "SOCKS5 login failed (wrong user name or password)", b"\x01\x01", logged=True
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
        if request.command == CMD_UDP_ASSOCIATE:
            return Request("socks5-udp", request.target, serve=self._associate)
        return Request("socks5", request.target, _SOCKS5_SUCCESS, _socks5_error)

    async def _associate(self, conn: ClientConnection) -> None:
        """A UDP ASSOCIATE: the association lives until the TCP connection ends (udp.py)."""
        assert conn.target is not None
        await UdpAssociation(conn, self, self.udp, conn.target.port).serve()

    async def _socks4(self, stream: Stream) -> Request:
        request = await read_message(
            stream, socks_proto.parse_socks4_request, socks_proto.SOCKS4_REQUEST_LIMIT
        )
        if self._users:
            raise ProtocolError(
                "SOCKS4 has no passwords and this listener requires a login; use SOCKS5",
                socks_proto.socks4_reply(False),
            )
        protocol = "socks4a" if request.target.ip is None else "socks4"
        return Request(protocol, request.target, _SOCKS4_SUCCESS, _socks4_error)

    async def _http(self, conn: ClientConnection, stream: Stream) -> Request:
        conn.protocol = "http"  # until the head says which (timeout_reply reads it)
        try:
            # Up to the empty line, CRLF or bare LF (RFC 9112 §2.2 lets a recipient accept a
            # bare LF; detour's proxy does not, but answers it at once: 400, not silence).
            head = await http_server.read_request_head(stream, http_proto.MAX_HEAD)
        except asyncio.LimitOverrunError:
            raise ProtocolError(
                "request head too large", http_proto.error_response(431, "request head too large")
            ) from None
        except asyncio.IncompleteReadError:
            raise ProtocolError("client closed the connection mid-request") from None
        except HeadError as exc:  # a request line that cannot be one, seen early
            raise http_proto.BadRequest(str(exc), exc.status) from None
        request = http_proto.parse_request_head(head)
        if self._users:
            if request.header_count("proxy-authorization") > 1:  # which one would be meant?
                self.admission.throttled.log(
                    "login",
                    logging.WARNING,
                    self.admission.prefix + "refused client %s: HTTP proxy login not checked: "
                    "%d Proxy-Authorization fields in one request",
                    conn.client,
                    request.header_count("proxy-authorization"),
                )
                refusal = http_proto.BadRequest("more than one Proxy-Authorization field")
                refusal.logged = True
                raise refusal
            login = http_proto.check_basic_auth(request)
            if login is None:  # (a client asking without one first, as browsers do: no try)
                raise ProtocolError("HTTP proxy login missing", http_proto.AUTH_REQUIRED)
            if not await self._login(conn, "HTTP proxy login", *login):
                raise ProtocolError("HTTP proxy login wrong", http_proto.AUTH_REQUIRED, logged=True)
        if request.is_connect:
            return Request(
                "http-connect",
                request.destination,
                http_proto.CONNECT_ESTABLISHED,
                _http_error,
            )
        return Request(
            "http",
            request.destination,
            b"",
            _http_error,
            first_upstream=http_proto.forwarded_head(request),
        )


def _socks5_error(exc: BaseException) -> bytes:
    return socks_proto.socks5_reply(_socks5_error_code(exc))


def _socks4_error(exc: BaseException) -> bytes:
    return _SOCKS4_FAILURE


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
