"""The SOCKS5 UDP request header (RFC 1928 §7), sans-IO: what every datagram between a SOCKS5
client and its UDP relay carries in front of its payload, in both directions.

    +-----+------+------+----------+----------+----------+
    | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
    |  2  |  1   |  1   | variable |    2     | variable |
    +-----+------+------+----------+----------+----------+
      0000  00 = whole   01 v4 (4 bytes), 03 name (1 length byte + name), 04 v6 (16 bytes)

From the client, DST is where the payload goes; toward the client, DST is where it came from.
FRAG != 0 is a fragment of a larger datagram: detour (like most relays) does not reassemble,
so the caller drops those (RFC 1928 allows an implementation that does not support
fragmentation to drop any datagram whose FRAG is not 0).

`parse_datagram` takes one whole datagram (UDP keeps boundaries: there is no "need more")
and returns a `Datagram` or raises ProtocolError saying what is wrong with it. This module is
a leaf over bytes (no sockets), so it is unit-tested and fuzzed without a network.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Endpoint
from .socks import encode_address, parse_address
from .wire import ProtocolError

__all__ = ["MAX_HEADER", "Datagram", "encode_datagram", "parse_datagram"]

# The longest header: RSV FRAG ATYP + a 255-byte name with its length + port.
MAX_HEADER = 2 + 1 + 1 + 1 + 255 + 2


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram as the header says: its fragment number (0: whole), the address it goes
    to (from a client) or comes from (toward one), and the payload."""

    frag: int
    address: Endpoint
    payload: bytes


def parse_datagram(data: bytes) -> Datagram:
    """One datagram with its SOCKS5 UDP header; ProtocolError says what is wrong."""
    if len(data) < 4:
        raise ProtocolError(f"datagram of {len(data)} bytes is shorter than a UDP header")
    if data[0] or data[1]:
        raise ProtocolError("UDP header's reserved bytes are not zero")
    address, end = parse_address(data, 3, "UDP header")
    return Datagram(data[2], address, data[end:])


def encode_datagram(address: Endpoint, payload: bytes, frag: int = 0) -> bytes:
    """The header for `address` (where the payload goes, or where it came from) + payload."""
    return bytes([0, 0, frag]) + encode_address(address.host, address.port) + payload
