"""STUN binding requests and responses (RFC 5389), sans-IO: what a call client sends first to
learn its public address, and so what detour's UDP probe sends to a service's STUN endpoint
(and the lab's STUN server answers).

    header   0                   1                   2                   3
             +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
             |0 0|     STUN Message Type     |         Message Length        |
             +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
             |                 Magic Cookie = 0x2112A442                     |
             +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
             |                  Transaction ID (96 bits)                     |
             +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    attribute  Type (16) | Length (16) | Value, padded to 4 bytes

    Binding request 0x0001, success response 0x0101, error response 0x0111.
    XOR-MAPPED-ADDRESS (0x0020): 00 FAMILY(01 v4, 02 v6) X-PORT X-ADDRESS, where the port is
    XORed with the cookie's top 16 bits and the address with the cookie (+ transaction ID).

`parse_message` takes one whole datagram and returns a `StunMessage` or raises ProtocolError.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

from .base import Endpoint
from .wire import ProtocolError

__all__ = [
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "MAGIC_COOKIE",
    "StunMessage",
    "binding_request",
    "binding_response",
    "looks_like_stun",
    "parse_message",
]

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_SOFTWARE = 0x8022
HEADER = 20

_COOKIE = struct.pack("!I", MAGIC_COOKIE)


@dataclass(frozen=True, slots=True)
class StunMessage:
    type: int
    transaction: bytes  # 12 bytes
    attributes: tuple[tuple[int, bytes], ...]

    def attribute(self, kind: int) -> bytes | None:
        return next((value for k, value in self.attributes if k == kind), None)

    @property
    def mapped(self) -> Endpoint | None:
        """The address the server saw the request come from (XOR-MAPPED-ADDRESS, else the
        old MAPPED-ADDRESS), or None when there is none or it cannot be read."""
        xored = self.attribute(ATTR_XOR_MAPPED_ADDRESS)
        if xored is not None:
            return _address(xored, _COOKIE + self.transaction)
        plain = self.attribute(ATTR_MAPPED_ADDRESS)
        return _address(plain, None) if plain is not None else None


def looks_like_stun(data: bytes) -> bool:
    """Whether a datagram starts as a STUN message does (top bits zero, the magic cookie)."""
    return len(data) >= HEADER and data[0] & 0xC0 == 0 and data[4:8] == _COOKIE


def parse_message(data: bytes) -> StunMessage:
    if len(data) < HEADER:
        raise ProtocolError(f"STUN message of {len(data)} bytes is shorter than its header")
    kind, length = struct.unpack_from("!HH", data)
    if kind & 0xC000:
        raise ProtocolError("not a STUN message (top bits set)")
    if data[4:8] != _COOKIE:
        raise ProtocolError("not a STUN message (no magic cookie)")
    if length % 4 or HEADER + length != len(data):
        raise ProtocolError(f"STUN length {length} does not match the datagram's {len(data)}")
    attributes = []
    pos = HEADER
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError("STUN attribute header cut short")
        attr, size = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + size
        if end > len(data):
            raise ProtocolError(f"STUN attribute {attr:#06x} longer than the message")
        attributes.append((attr, data[pos + 4 : end]))
        pos = end + (-size % 4)
    return StunMessage(kind, data[8:20], tuple(attributes))


def binding_request(transaction: bytes | None = None) -> tuple[bytes, bytes]:
    """A binding request with no attributes, and its transaction ID (random when not given)."""
    transaction = os.urandom(12) if transaction is None else transaction
    if len(transaction) != 12:
        raise ValueError("a STUN transaction ID is 12 bytes")
    return struct.pack("!HH", BINDING_REQUEST, 0) + _COOKIE + transaction, transaction


def binding_response(transaction: bytes, mapped: Endpoint, software: str = "") -> bytes:
    """A binding success response telling `mapped` (an IP address and port)."""
    ip = ipaddress.ip_address(mapped.host)
    key = _COOKIE + transaction
    port = mapped.port ^ (MAGIC_COOKIE >> 16)
    packed = bytes(a ^ b for a, b in zip(ip.packed, key, strict=False))
    value = struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port) + packed
    body = _attribute(ATTR_XOR_MAPPED_ADDRESS, value)
    if software:
        body += _attribute(ATTR_SOFTWARE, software.encode())
    return struct.pack("!HH", BINDING_SUCCESS, len(body)) + _COOKIE + transaction + body


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _address(value: bytes, key: bytes | None) -> Endpoint | None:
    if len(value) < 4:
        return None
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    size = {1: 4, 2: 16}.get(family)
    if size is None or len(value) != 4 + size:
        return None
    raw = value[4:]
    if key is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, key, strict=False))
    return Endpoint(str(ipaddress.ip_address(raw)), port)
