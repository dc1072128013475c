"""`socks5://` and `socks4a://`: reach the destination through an upstream SOCKS proxy.

Names are sent to the proxy unresolved (SOCKS5 ATYP 3, SOCKS4a's trailing domain), so a
poisoned local resolver never sees them. The wire constants and address codec here are also
used by detour's own SOCKS server (helper/proxy/socks.py).

SOCKS5 (RFC 1928, RFC 1929)::

    greeting  +-----+----------+----------+      choice  +-----+--------+
              | VER | NMETHODS | METHODS  |              | VER | METHOD |
              | 05  |    1     | 1..255   |              | 05  |   1    |
              +-----+----------+----------+              +-----+--------+
    auth      +-----+------+-------+------+--------+     status +-----+--------+
    (1929 §2) | 01  | ULEN | UNAME | PLEN | PASSWD |            | 01  | 00=ok  |
              +-----+------+-------+------+--------+            +-----+--------+
    request   +-----+-----+-----+------+----------+----------+
              | VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT |   CMD 01 connect
              | 05  |  1  | 00  |  1   | variable |    2     |   ATYP 01 v4, 03 name, 04 v6
              +-----+-----+-----+------+----------+----------+
    reply     | VER | REP | RSV | ATYP | BND.ADDR | BND.PORT |   REP 00 = succeeded

SOCKS4a::

    request   | VN=04 | CD=01 | DSTPORT(2) | DSTIP(4)=0.0.0.1 | USERID | 00 | DOMAIN | 00 |
    reply     | VN=00 | CD (5A granted, 5B failed, 5C/5D identd) | DSTPORT(2) | DSTIP(4) |
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from .base import Dialer, DialError, Endpoint, Failure, Op, Stream
from .upstream import dial_through_proxy
from .wire import ProtocolError

__all__ = [
    "SOCKS5_REPLY_TEXT",
    "Socks4aDialer",
    "Socks5Dialer",
    "encode_address",
    "encode_name",
    "parse_address",
]

_PORT = struct.Struct("!H")

SOCKS5 = 0x05
SOCKS4 = 0x04

METHOD_NO_AUTH = 0x00
METHOD_USER_PASS = 0x02
METHOD_NONE_ACCEPTABLE = 0xFF
AUTH_VERSION = 0x01

CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

# RFC 1928 §6 reply codes
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

SOCKS5_REPLY_TEXT = {
    REP_GENERAL_FAILURE: "general failure",
    REP_NOT_ALLOWED: "connection not allowed by ruleset",
    REP_NETWORK_UNREACHABLE: "network unreachable",
    REP_HOST_UNREACHABLE: "host unreachable",
    REP_CONNECTION_REFUSED: "connection refused",
    REP_TTL_EXPIRED: "TTL expired",
    REP_COMMAND_NOT_SUPPORTED: "command not supported",
    REP_ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}

# What a SOCKS5 reply code tells about the destination, and which operation it was.
_REPLY_FAILURES = {
    REP_GENERAL_FAILURE: (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE),
    REP_NOT_ALLOWED: (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE),
    REP_NETWORK_UNREACHABLE: (Failure.NETWORK_UNREACHABLE, Op.CONNECT),
    REP_HOST_UNREACHABLE: (Failure.HOST_UNREACHABLE, Op.CONNECT),
    REP_CONNECTION_REFUSED: (Failure.CONNECTION_REFUSED, Op.CONNECT),
    REP_TTL_EXPIRED: (Failure.TIMEOUT, Op.CONNECT),
}

SOCKS4_GRANTED = 0x5A
SOCKS4_REJECTED = 0x5B
SOCKS4_NO_IDENTD = 0x5C
SOCKS4_IDENTD_MISMATCH = 0x5D


def encode_name(host: str) -> bytes:
    """A host name as it goes on the wire: ASCII, or IDNA for international names."""
    try:
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None
    if b"\0" in name:
        raise ValueError("host name contains NUL")
    return name


def encode_address(host: str, port: int) -> bytes:
    """ATYP + DST.ADDR + DST.PORT for a SOCKS5 request or reply."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = encode_name(host)
        if not 0 < len(name) < 256:
            raise ValueError(f"host name of {len(name)} bytes cannot be sent over SOCKS5") from None
        return bytes([ATYP_DOMAIN, len(name)]) + name + struct.pack("!H", port)
    if ip.version == 4:
        return bytes([ATYP_IPV4]) + ip.packed + struct.pack("!H", port)
    return bytes([ATYP_IPV6]) + ip.packed + struct.pack("!H", port)


def parse_address(data: bytes, start: int, what: str) -> tuple[Endpoint, int]:
    """ATYP + ADDR + PORT at `data[start:]`, as encode_address writes it: the endpoint and the
    offset after it. ProtocolError names `what` (a UDP header, a datagram record, a packet)."""
    if len(data) <= start:
        raise ProtocolError(f"{what} ends inside its address")
    atyp = data[start]
    if atyp == ATYP_IPV4:
        end = start + 1 + 4
        host = socket.inet_ntoa(data[start + 1 : end]) if len(data) >= end else ""
    elif atyp == ATYP_IPV6:
        end = start + 1 + 16
        host = str(ipaddress.IPv6Address(data[start + 1 : end])) if len(data) >= end else ""
    elif atyp == ATYP_DOMAIN:
        if len(data) < start + 2 or data[start + 1] == 0:
            raise ProtocolError(f"{what} names no host")
        end = start + 2 + data[start + 1]
        try:
            host = data[start + 2 : end].decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what}'s host name is not ASCII") from None
        if any(ord(c) < 0x21 or c in "\x7f/\\@[]:" for c in host):
            raise ProtocolError(f"{what}'s host name has characters no host name has")
    else:
        raise ProtocolError(f"{what} has unknown address type {atyp}")
    if len(data) < end + 2:
        raise ProtocolError(f"{what} ends inside its address")
    return Endpoint(host, _PORT.unpack_from(data, end)[0]), end + 2


async def _read_socks5_address(stream: Stream, atyp: int) -> Endpoint | None:
    """Read BND.ADDR and BND.PORT of a reply (a CONNECT has no use for them; a UDP ASSOCIATE
    sends its datagrams there); None when they cannot be an address."""
    if atyp == ATYP_IPV4:
        raw = await stream.readexactly(4 + 2)
        host = str(ipaddress.IPv4Address(raw[:4]))
    elif atyp == ATYP_IPV6:
        raw = await stream.readexactly(16 + 2)
        host = str(ipaddress.IPv6Address(raw[:16]))
    elif atyp == ATYP_DOMAIN:
        (length,) = await stream.readexactly(1)
        raw = await stream.readexactly(length + 2)
        host = raw[:length].decode("ascii", "replace")
    else:
        raise DialError(
            Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, f"reply has address type {atyp}"
        )
    (port,) = struct.unpack("!H", raw[-2:])
    return Endpoint(host, port) if host else None


def _credential(value: str | bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    # bytes go out as given: a pluggable transport's arguments end in a NUL password.
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    if not 0 < len(raw) < 256:
        raise ValueError(f"SOCKS5 {what} must be 1-255 bytes")
    return raw


class Socks5Dialer:
    """CONNECT through a SOCKS5 proxy, with RFC 1929 user/password when given."""

    def __init__(
        self,
        inner: Dialer,
        proxy: Endpoint,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        *,
        handshake_timeout: float = 10.0,
        label: str | None = None,
    ) -> None:
        """`label` names the proxy in messages (default "proxy HOST:PORT")."""
        if (username is None) != (password is None):
            raise ValueError("SOCKS5 needs both a username and a password, or neither")
        self.inner = inner
        self.proxy = proxy
        self._username = _credential(username, "username")
        self._password = _credential(password, "password")
        self.handshake_timeout = handshake_timeout
        self.label = label or f"proxy {proxy}"

    async def dial(self, target: Endpoint) -> Stream:
        try:
            request = bytes([SOCKS5, CMD_CONNECT, 0x00]) + encode_address(target.host, target.port)
        except ValueError as exc:
            raise _protocol_error(str(exc)) from None

        async def handshake(stream: Stream) -> None:
            await self._negotiate(stream, request)

        return await dial_through_proxy(
            self.inner, self.proxy, handshake, self.handshake_timeout, self.label
        )

    async def associate(self) -> tuple[Stream, Endpoint]:
        """UDP ASSOCIATE (RFC 1928 §7): the control connection (the association lives as long
        as it does) and where to send the datagrams (the relay address the proxy answered;
        an unspecified address there means the proxy's own).
        """
        # DST 0.0.0.0:0: "the client does not know yet where it will send from".
        request = bytes([SOCKS5, CMD_UDP_ASSOCIATE, 0x00]) + encode_address("0.0.0.0", 0)
        bound: list[Endpoint | None] = []

        async def handshake(stream: Stream) -> None:
            bound.append(await self._negotiate(stream, request))

        stream = await dial_through_proxy(
            self.inner, self.proxy, handshake, self.handshake_timeout, self.label
        )
        relay = bound[0]
        if relay is not None and relay.ip is not None and relay.ip.is_unspecified:
            relay = Endpoint(self.proxy.host, relay.port)
        if relay is None or relay.port == 0:
            stream.abort()
            raise _protocol_error(f"{self.label} answered UDP ASSOCIATE with no relay address")
        return stream, relay

    async def _negotiate(self, stream: Stream, request: bytes) -> Endpoint | None:
        """Greeting, login, `request`; the reply's bound address."""
        methods = [METHOD_NO_AUTH]
        if self._username is not None:
            methods = [METHOD_USER_PASS, METHOD_NO_AUTH]
        stream.write(bytes([SOCKS5, len(methods), *methods]))
        version, method = await stream.readexactly(2)
        if version != SOCKS5:
            raise _protocol_error(f"proxy answered version {version}, not SOCKS5")
        if method == METHOD_USER_PASS and self._username is not None:
            assert self._password is not None
            stream.write(
                bytes([AUTH_VERSION, len(self._username)])
                + self._username
                + bytes([len(self._password)])
                + self._password
            )
            _, status = await stream.readexactly(2)
            if status != 0:
                raise DialError(
                    Failure.PROXY_AUTH_FAILED,
                    Op.PROXY_HANDSHAKE,
                    f"{self.label} rejected the username or password",
                )
        elif method == METHOD_NONE_ACCEPTABLE:
            wanted = "accepts none of our methods" if self._username else "requires a login"
            raise DialError(Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE, f"{self.label} {wanted}")
        elif method != METHOD_NO_AUTH:
            raise _protocol_error(f"proxy chose method {method:#04x}, which was not offered")
        stream.write(request)
        version, reply, _rsv, atyp = await stream.readexactly(4)
        if version != SOCKS5:
            raise _protocol_error(f"reply version {version}, not SOCKS5")
        if reply != REP_SUCCEEDED:
            failure, op = _REPLY_FAILURES.get(
                reply, (Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE)
            )
            text = SOCKS5_REPLY_TEXT.get(reply, f"unknown reply {reply:#04x}")
            raise DialError(failure, op, f"{self.label} answered: {text}")
        return await _read_socks5_address(stream, atyp)

    def __repr__(self) -> str:
        return f"Socks5Dialer({self.proxy}, auth={self._username is not None})"


class Socks4aDialer:
    """CONNECT through a SOCKS4a proxy (names resolved by the proxy; no passwords)."""

    def __init__(
        self,
        inner: Dialer,
        proxy: Endpoint,
        user_id: str = "",
        *,
        handshake_timeout: float = 10.0,
        label: str | None = None,
    ) -> None:
        """`label` names the proxy in messages (default "proxy HOST:PORT")."""
        if "\x00" in user_id:
            raise ValueError("SOCKS4 user id cannot contain NUL")
        self.inner = inner
        self.proxy = proxy
        self._user_id = user_id.encode("utf-8")
        self.handshake_timeout = handshake_timeout
        self.label = label or f"proxy {proxy}"

    async def dial(self, target: Endpoint) -> Stream:
        ip = target.ip
        port = struct.pack("!H", target.port)
        if ip is not None and ip.version == 4:
            request = bytes([SOCKS4, CMD_CONNECT]) + port + ip.packed + self._user_id + b"\0"
        else:
            try:
                host = encode_name(target.host)
            except ValueError as exc:
                raise _protocol_error(str(exc)) from None
            # 0.0.0.1: "the destination follows as a name" (SOCKS4a)
            request = (
                bytes([SOCKS4, CMD_CONNECT])
                + port
                + b"\0\0\0\1"
                + self._user_id
                + b"\0"
                + host
                + b"\0"
            )

        async def handshake(stream: Stream) -> None:
            stream.write(request)
            reply = await stream.readexactly(8)
            if reply[0] != 0x00:
                raise _protocol_error(f"reply version {reply[0]}, not SOCKS4")
            code = reply[1]
            if code == SOCKS4_GRANTED:
                return
            if code in (SOCKS4_NO_IDENTD, SOCKS4_IDENTD_MISMATCH):
                raise DialError(
                    Failure.PROXY_AUTH_FAILED,
                    Op.PROXY_HANDSHAKE,
                    f"{self.label} rejected the user id",
                )
            raise DialError(
                Failure.PROXY_REFUSED,
                Op.PROXY_HANDSHAKE,
                f"{self.label} rejected or failed the request (code {code:#04x})",
            )

        return await dial_through_proxy(
            self.inner, self.proxy, handshake, self.handshake_timeout, self.label
        )

    def __repr__(self) -> str:
        return f"Socks4aDialer({self.proxy})"


def _protocol_error(detail: str) -> DialError:
    return DialError(Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, detail)
