"""What the inbound protocol parsers (SOCKS, HTTP) share: the errors they raise (ProtocolError
and NeedMore, from transports/wire.py, as every wire parser in detour), the checks on a
destination a client names, and reading one length-bounded message off a client stream.

The parsers themselves are pure functions over bytes (no sockets), so they are unit-tested
and fuzzed without a network; the listener is the thin asyncio glue around them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar

from transports import Endpoint, Stream
from transports.wire import NeedMore, ProtocolError

__all__ = ["NeedMore", "ProtocolError", "destination", "read_message"]

T = TypeVar("T")

MAX_NAME_LENGTH = 253  # RFC 1035: 255 octets on the wire, 253 characters written out


def destination(host: str, port: int) -> Endpoint:
    """Validate a destination a client asked for; raise ValueError saying what is wrong."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not valid")
    if not host:
        raise ValueError("empty host name")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return Endpoint(str(ip), port)
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"host name of {len(host)} characters (at most {MAX_NAME_LENGTH})")
    if any(ord(c) < 0x21 or c in "\x7f/\\@[]:" for c in name):
        raise ValueError("host name contains characters no host name has")
    if any(not label or len(label.encode()) > 63 for label in name.split(".")):
        raise ValueError("host name has an empty or over-long label")
    if not name.isascii():  # an international name: the resolver writes it in IDNA
        try:
            name.encode("idna")
        except UnicodeError:
            raise ValueError("host name is not a valid international (IDNA) name") from None
    return Endpoint(name, port)


async def read_message(stream: Stream, parse: Callable[[bytes], tuple[int, T]], limit: int) -> T:
    """Read from `stream` until `parse` accepts a prefix of the bytes (it raises NeedMore
    until then); bytes after the message are put back for whoever reads next.

    For short messages only (SOCKS): the prefix is parsed again after every read.
    """
    buf = b""
    while True:
        try:
            consumed, message = parse(buf)
        except NeedMore:
            if len(buf) >= limit:
                raise ProtocolError(f"message longer than {limit} bytes") from None
            chunk = await stream.read(limit - len(buf))
            if not chunk:
                raise ProtocolError("client closed the connection mid-handshake") from None
            buf += chunk
            continue
        if consumed < len(buf):
            stream.unread(buf[consumed:])
        return message
