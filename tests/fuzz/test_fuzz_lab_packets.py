"""Property tests for the lab's packet censor: what it reads comes off the wire (packets from
any client) and out of the kernel (netlink messages), so for any bytes the parsers return a
value or None and never raise, and the censor decides on any sequence of packets without
raising. Packets are decoded from one binary draw (tests/fuzz/strategies.py explains why):
headers with any lengths and flags, payloads cut from a real ClientHello or any bytes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from helper.lab import nfqueue
from helper.lab.censor import Rule
from helper.lab.dpi import Depth
from helper.lab.packetcensor import URGENT_MODES, PacketCensor, PacketModel, PacketPolicy
from helper.lab.packets import parse
from tests.fuzz.strategies import Choices
from tests.support.tls import client_hello, record

HELLO = record(client_hello(b"web.telegram.org"))


def _packet(c: Choices, isn: int) -> bytes:
    ihl = 5 if c.chance(90) else c.byte() % 16
    offset = 5 if c.chance(90) else c.byte() % 16
    start = c.size(len(HELLO))
    payload = HELLO[start : start + c.size(len(HELLO))] if c.chance(70) else c.take(c.size(80))
    seq = isn + 1 + start if c.chance(80) else c.byte() << 24 | c.byte()
    total = 20 + 20 + len(payload) if c.chance(90) else c.size(400)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, 0, c.byte(), 6, 0, bytes(4), bytes(4))
        + bytes(max(0, ihl * 4 - 20))
        + struct.pack("!HHIIHHHH", 1, 443, seq, 0, offset << 12 | c.byte() % 64, 0, 0, c.size(600))
        + payload
    )


def _wire(data: bytes) -> tuple[PacketModel, list[bytes]]:
    c = Choices(data)
    model = PacketModel(c.pick(list(Depth)), c.chance(50), c.pick(URGENT_MODES), c.chance(50))
    isn = c.byte() << 8 | c.byte()
    syn = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 63, 6, 0, bytes(4), bytes(4))
    syn += struct.pack("!HHIIHHHH", 1, 443, isn, 0, 5 << 12 | 0x02, 0, 0, 0)
    return model, [syn] + [_packet(c, isn) for _ in range(c.size(8))]


def _packet_bytes(raw: bytes) -> bytes:
    """Any bytes, or (first byte odd) the last packet the rest decodes to: one draw."""
    return _wire(raw[1:121])[1][-1] if raw[:1] and raw[0] & 1 else raw[1:]


def any_bytes_parse_to_a_packet_or_nothing(data: bytes) -> None:
    pkt = parse(data)
    if pkt is not None:
        assert len(pkt.payload) <= len(data)
        offset = pkt.urgent_offset
        assert offset is None or 0 <= offset < len(pkt.payload)


def the_censor_decides_on_any_packets(data: bytes) -> None:
    model, wire = _wire(data)
    box = PacketCensor(PacketPolicy((Rule("reset", sni="telegram.org"),), model))
    for raw in wire:
        pkt = parse(raw)
        if pkt is not None:
            box.packet(pkt)
    assert len(box.events) <= 1  # one flow, one decision


# The packet parser's two properties share each draw (tests/fuzz/strategies.py: a draw
# costs more than the checks): the bytes as a packet (or a packet decoded from them), and
# as a flow of packets the censor decides on.
def any_bytes_parse_and_the_censor_decides_on_any_packets(raw: bytes) -> None:
    any_bytes_parse_to_a_packet_or_nothing(_packet_bytes(raw[:201]))
    the_censor_decides_on_any_packets(raw)


def any_netlink_bytes_read_without_raising(data: bytes) -> None:
    for _kind, _seq, payload in nfqueue.messages(data):
        nfqueue.attributes(payload)
    found, errors = nfqueue.queued_packets(data)
    assert len(found) + len(errors) <= len(data) // 16 + 1


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    raw=st.binary(max_size=300),
    data=st.binary(max_size=300),
)
def test_packets_the_censor_and_netlink(raw, data) -> None:
    any_bytes_parse_and_the_censor_decides_on_any_packets(raw)
    any_netlink_bytes_read_without_raising(data)
