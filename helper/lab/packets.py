"""IPv4 and TCP headers, read and written, for the lab's packet censor (packetcensor.py):
pure functions over bytes, separate from anything in detour's proxy path.

IPv4 header (RFC 791 §3.1)::

    0       4       8              16      19                      31
    +-------+-------+---------------+-------+-----------------------+
    |version|  IHL  |      TOS      |          total length         |
    +-------+-------+---------------+-------+-----------------------+
    |        identification         |flags  |    fragment offset    |
    +---------------+---------------+-------+-----------------------+
    |      TTL      |   protocol    |        header checksum        |
    +---------------+---------------+-------------------------------+
    |                 source address, destination address           |
    +---------------------------------------------------------------+

TCP header (RFC 9293 §3.1)::

    +-------------------------------+-------------------------------+
    |          source port          |       destination port        |
    +-------------------------------+-------------------------------+
    |                        sequence number                        |
    |                     acknowledgment number                     |
    +-------+-------+---------------+-------------------------------+
    | offset| rsrvd |     flags     |            window             |
    +-------+-------+---------------+-------------------------------+
    |           checksum            |        urgent pointer         |
    +-------------------------------+-------------------------------+

Flags: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20. With URG, the urgent byte
is the one before `seq + urgent pointer` (the BSD reading, which Linux follows).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN", "URG", "TcpPacket", "checksum", "parse", "reset"]

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PROTO_TCP = 6
_MORE_FRAGMENTS, _OFFSET_MASK = 0x2000, 0x1FFF


@dataclass(frozen=True)
class TcpPacket:
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    urgent: int  # the urgent pointer (meaningful with URG)
    payload: bytes

    @property
    def client(self) -> str:
        return f"{self.src}:{self.sport}"

    @property
    def server(self) -> str:
        return f"{self.dst}:{self.dport}"

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    @property
    def urgent_offset(self) -> int | None:
        """Where the urgent byte is in the payload, when this segment carries it."""
        if not self.has(URG) or not 0 < self.urgent <= len(self.payload):
            return None
        return self.urgent - 1


def parse(packet: bytes) -> TcpPacket | None:
    """An IPv4 TCP packet, or None for anything else: another protocol or version, a
    fragment, lengths that do not fit the bytes given."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    (total,) = struct.unpack_from("!H", packet, 2)
    (fragment,) = struct.unpack_from("!H", packet, 6)
    if ihl < 20 or total < ihl + 20 or total > len(packet) or packet[9] != PROTO_TCP:
        return None
    if fragment & (_MORE_FRAGMENTS | _OFFSET_MASK):
        return None  # a fragment: the lab's packets never are
    sport, dport, seq, ack, offset_flags, _window, _check, urgent = struct.unpack_from(
        "!HHIIHHHH", packet, ihl
    )
    data_offset = (offset_flags >> 12) * 4
    if data_offset < 20 or ihl + data_offset > total:
        return None
    return TcpPacket(
        src=ipaddress.IPv4Address(packet[12:16]),
        dst=ipaddress.IPv4Address(packet[16:20]),
        ttl=packet[8],
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=offset_flags & 0x3F,
        urgent=urgent,
        payload=bytes(packet[ihl + data_offset : total]),
    )


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reset(
    src: ipaddress.IPv4Address,
    sport: int,
    dst: ipaddress.IPv4Address,
    dport: int,
    seq: int,
    ack: int | None = None,
    ttl: int = 64,
) -> bytes:
    """A TCP reset from src to dst, as a whole IPv4 packet (for a raw socket). A receiver
    takes it when `seq` is exactly the next sequence number it expects (RFC 5961 §3)."""
    flags = RST | (ACK if ack is not None else 0)
    tcp = struct.pack("!HHIIHHHH", sport, dport, seq, ack or 0, (5 << 12) | flags, 0, 0, 0)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, PROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, PROTO_TCP, 0, src.packed,
        dst.packed,
    )  # fmt: skip
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + tcp
