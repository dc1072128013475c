"""The tunnel's two messages, inside the inner TLS (sans-IO, bounded, fuzzed):

    request   | 01 (version) | 01 (connect) | host length (1) | host | port (2) |
    reply     | 01 (version) | status (1): 00 ok, 01 failed | text length (2) | text |
              text = "FAILURE OP DETAIL" for a failure (OONI failure string, operation, a
              sentence), empty for success

After a successful reply the TLS stream carries the connection's bytes both ways. The
parsers raise transports/wire.py's NeedMore and ProtocolError.
"""

from __future__ import annotations

import struct

from ..base import DialError, Endpoint, Failure, Op
from ..wire import NeedMore, ProtocolError

__all__ = [
    "NeedMore",
    "ProtocolError",
    "encode_failure",
    "encode_request",
    "encode_success",
    "parse_reply",
    "parse_request",
]

VERSION = 1
CONNECT = 1
MAX_TEXT = 512


def encode_request(target: Endpoint) -> bytes:
    host = target.host.encode("idna") if not target.host.isascii() else target.host.encode()
    if not 0 < len(host) < 256:
        raise ValueError(f"host name of {len(host)} bytes")
    return bytes([VERSION, CONNECT, len(host)]) + host + struct.pack("!H", target.port)


def parse_request(buf: bytes) -> tuple[int, Endpoint]:
    """(consumed, destination); raises NeedMore or ProtocolError."""
    if len(buf) < 3:
        raise NeedMore
    if buf[0] != VERSION or buf[1] != CONNECT:
        raise ProtocolError(f"unknown request {buf[0]}/{buf[1]}")
    length = buf[2]
    end = 3 + length + 2
    if len(buf) < end:
        raise NeedMore
    try:
        host = buf[3 : 3 + length].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("the host is not ASCII") from None
    (port,) = struct.unpack_from("!H", buf, 3 + length)
    if not host or port == 0 or any(c in host for c in " /\\@\0"):
        raise ProtocolError("not a valid destination")
    return end, Endpoint(host, port)


def encode_success() -> bytes:
    return bytes([VERSION, 0]) + struct.pack("!H", 0)


def encode_failure(error: DialError) -> bytes:
    detail = " ".join(error.detail.split())  # one line
    text = f"{error.failure.value} {error.op.value} {detail}".encode()[:MAX_TEXT]
    return bytes([VERSION, 1]) + struct.pack("!H", len(text)) + text


def parse_reply(buf: bytes) -> tuple[int, DialError | None]:
    """(consumed, None for success or the relay's DialError); NeedMore or ProtocolError."""
    if len(buf) < 4:
        raise NeedMore
    version, status = buf[0], buf[1]
    (length,) = struct.unpack_from("!H", buf, 2)
    if version != VERSION or status not in (0, 1) or length > MAX_TEXT:
        raise ProtocolError("not a tunnel reply")
    if len(buf) < 4 + length:
        raise NeedMore
    if status == 0:
        return 4 + length, None
    text = buf[4 : 4 + length].decode("utf-8", "replace")
    failure_text, _, rest = text.partition(" ")
    op_text, _, detail = rest.partition(" ")
    failure = (
        Failure(failure_text) if failure_text in Failure._value2member_map_ else Failure.UNKNOWN
    )
    op = Op(op_text) if op_text in Op._value2member_map_ else Op.CONNECT
    printable = "".join(c for c in detail if c.isprintable())[:200]
    return 4 + length, DialError(failure, op, f"at the relay: {printable}")
