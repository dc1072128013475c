"""SOCKS5 (RFC 1928, user/password RFC 1929) and SOCKS4/4a, server side: parsers over bytes
and the replies detour sends. Wire layouts are drawn in transports/socks.py.

Each parser takes the bytes received so far and returns (bytes consumed, message), raises
NeedMore when the message is incomplete, or ProtocolError carrying the reply to send.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from transports import Endpoint
from transports.socks import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    AUTH_VERSION,
    CMD_BIND,
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_GENERAL_FAILURE,
    SOCKS4,
    SOCKS4_GRANTED,
    SOCKS4_REJECTED,
    SOCKS5,
    encode_address,
)

from .handshake import NeedMore, ProtocolError, destination

# Longest messages we accept: a greeting is at most 2 + 255 bytes, a user/password request
# 3 + 255 + 255, a SOCKS5 request 4 + 1 + 255 + 2; SOCKS4a adds a user id and a name.
SOCKS5_GREETING_LIMIT = 2 + 255
SOCKS5_AUTH_LIMIT = 3 + 255 + 255
SOCKS5_REQUEST_LIMIT = 4 + 1 + 255 + 2
SOCKS4_REQUEST_LIMIT = 8 + 256 + 256

_COMMAND_NAMES = {CMD_CONNECT: "CONNECT", CMD_BIND: "BIND", CMD_UDP_ASSOCIATE: "UDP ASSOCIATE"}


def socks5_reply(code: int, bound: Endpoint | None = None) -> bytes:
    """VER REP RSV ATYP BND.ADDR BND.PORT; an all-zero IPv4 address when there is none."""
    address = encode_address(bound.host, bound.port) if bound else b"\x01\0\0\0\0\0\0"
    return bytes([SOCKS5, code, 0x00]) + address


def socks4_reply(granted: bool) -> bytes:
    return bytes([0x00, SOCKS4_GRANTED if granted else SOCKS4_REJECTED]) + b"\0" * 6


@dataclass(frozen=True)
class Socks5Greeting:
    methods: frozenset[int]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Socks5Request:
    command: int
    target: Endpoint


@dataclass(frozen=True)
class Socks4Request:
    target: Endpoint
    user_id: str


def parse_socks5_greeting(buf: bytes) -> tuple[int, Socks5Greeting]:
    #   VER NMETHODS METHODS...
    if len(buf) < 2:
        raise NeedMore
    if buf[0] != SOCKS5:
        raise ProtocolError(f"not SOCKS5 (version byte {buf[0]})")
    count = buf[1]
    if count == 0:
        # No method we could choose: "no acceptable methods", then close.
        raise ProtocolError("SOCKS5 greeting offers no authentication methods", b"\x05\xff")
    if len(buf) < 2 + count:
        raise NeedMore
    return 2 + count, Socks5Greeting(frozenset(buf[2 : 2 + count]))


def parse_socks5_auth(buf: bytes) -> tuple[int, Credentials]:
    #   VER=01 ULEN UNAME PLEN PASSWD  (RFC 1929 §2)
    failed = bytes([AUTH_VERSION, 0x01])
    if len(buf) < 2:
        raise NeedMore
    if buf[0] != AUTH_VERSION:
        raise ProtocolError(f"username/password version {buf[0]}, not 1", failed)
    ulen = buf[1]
    if len(buf) < 2 + ulen + 1:
        raise NeedMore
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        raise NeedMore
    try:
        username = buf[2 : 2 + ulen].decode("utf-8")
        password = buf[3 + ulen : end].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("username or password is not UTF-8", failed) from None
    return end, Credentials(username, password)


def parse_socks5_request(buf: bytes) -> tuple[int, Socks5Request]:
    #   VER CMD RSV ATYP DST.ADDR DST.PORT
    if len(buf) < 4:
        raise NeedMore
    version, command, _reserved, atyp = buf[0], buf[1], buf[2], buf[3]
    if version != SOCKS5:
        raise ProtocolError(f"request version {version}, not SOCKS5", b"")
    if atyp == ATYP_IPV4:
        end = 4 + 4 + 2
        if len(buf) < end:
            raise NeedMore
        host = socket.inet_ntoa(buf[4:8])  # what str(IPv4Address) gives, without parsing
    elif atyp == ATYP_IPV6:
        end = 4 + 16 + 2
        if len(buf) < end:
            raise NeedMore
        host = str(ipaddress.IPv6Address(buf[4:20]))
    elif atyp == ATYP_DOMAIN:
        if len(buf) < 5:
            raise NeedMore
        length = buf[4]
        end = 5 + length + 2
        if len(buf) < end:
            raise NeedMore
        try:
            host = buf[5 : 5 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                "destination name is not UTF-8", socks5_reply(REP_GENERAL_FAILURE)
            ) from None
    else:
        raise ProtocolError(
            f"unknown address type {atyp}", socks5_reply(REP_ADDRESS_TYPE_NOT_SUPPORTED)
        )
    if command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
        name = _COMMAND_NAMES.get(command, f"command {command}")
        raise ProtocolError(f"{name} is not supported", socks5_reply(REP_COMMAND_NOT_SUPPORTED))
    (port,) = struct.unpack("!H", buf[end - 2 : end])
    if command == CMD_UDP_ASSOCIATE:
        # DST is where the client will send its datagrams from, all zeros when it does not
        # know yet (RFC 1928 §7): an address, not a destination, and port 0 is allowed. A
        # name there (PySocks sends "0") says nothing more than its port: datagrams are
        # taken from the client's own address whatever it names.
        if atyp == ATYP_DOMAIN:
            host = "0.0.0.0"
        return end, Socks5Request(command, Endpoint(host, port))
    try:
        # An address is an address already (written out canonically above); a name is
        # checked for what no host name holds.
        target = _address(host, port) if atyp != ATYP_DOMAIN else destination(host, port)
    except ValueError as exc:
        raise ProtocolError(f"bad destination: {exc}", socks5_reply(REP_GENERAL_FAILURE)) from None
    return end, Socks5Request(command, target)


def _address(host: str, port: int) -> Endpoint:
    if port == 0:
        raise ValueError("port 0 is not valid")
    return Endpoint(host, port)


def parse_socks4_request(buf: bytes) -> tuple[int, Socks4Request]:
    #   VN=04 CD DSTPORT(2) DSTIP(4) USERID NUL [DOMAIN NUL]   (DSTIP 0.0.0.x, x != 0: 4a)
    rejected = socks4_reply(False)
    if len(buf) < 8:
        raise NeedMore
    if buf[0] != SOCKS4:
        raise ProtocolError(f"not SOCKS4 (version byte {buf[0]})")
    if buf[1] != CMD_CONNECT:
        name = _COMMAND_NAMES.get(buf[1], f"command {buf[1]}")
        raise ProtocolError(f"SOCKS4 {name} is not supported", rejected)
    (port,) = struct.unpack("!H", buf[2:4])
    user_end = buf.find(b"\0", 8)
    if user_end < 0:
        raise NeedMore
    user_id = buf[8:user_end].decode("utf-8", "replace")
    end = user_end + 1
    if buf[4:7] == b"\0\0\0" and buf[7] != 0:
        name_end = buf.find(b"\0", end)
        if name_end < 0:
            raise NeedMore
        try:
            host = buf[end:name_end].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("destination name is not UTF-8", rejected) from None
        end = name_end + 1
    else:
        host = str(ipaddress.IPv4Address(buf[4:8]))
    try:
        target = destination(host, port)
    except ValueError as exc:
        raise ProtocolError(f"bad destination: {exc}", rejected) from None
    return end, Socks4Request(target, user_id)
