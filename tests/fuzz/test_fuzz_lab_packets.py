"""Property tests for the lab's packet censor: what it reads comes off the wire (packets from
any client) and out of the kernel (netlink messages), so for any bytes the parsers return a
value or None and never raise, and the censor decides on any sequence of packets without
raising."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from helper.lab import nfqueue
from helper.lab.censor import Rule
from helper.lab.dpi import Depth
from helper.lab.packetcensor import URGENT_MODES, PacketCensor, PacketModel, PacketPolicy
from helper.lab.packets import parse

# An IPv4 TCP header with fields hypothesis picks (lengths included), then any payload.
packets = st.builds(
    lambda ihl, total, flags, offset, seq, urgent, ttl, payload: (
        struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, 0, ttl, 6, 0, bytes(4), bytes(4))
        + bytes(max(0, ihl * 4 - 20))
        + struct.pack("!HHIIHHHH", 1, 443, seq, 0, offset << 12 | flags, 0, 0, urgent)
        + payload
    ),
    st.integers(0, 15),
    st.integers(0, 2000),
    st.integers(0, 0x3F),
    st.integers(0, 15),
    st.integers(0, 2**32 - 1) | st.integers(0, 40),
    st.integers(0, 2000),
    st.integers(0, 255),
    st.binary(max_size=600),
)


@given(st.binary(max_size=200) | packets)
def test_any_bytes_parse_to_a_packet_or_nothing(data: bytes) -> None:
    pkt = parse(data)
    if pkt is not None:
        assert len(pkt.payload) <= len(data)
        offset = pkt.urgent_offset
        assert offset is None or 0 <= offset < len(pkt.payload)


@given(
    st.sampled_from(list(Depth)),
    st.booleans(),
    st.sampled_from(URGENT_MODES),
    st.booleans(),
    st.lists(packets, max_size=12),
)
def test_the_censor_decides_on_any_packets(depth, reorder, urgent, check_ttl, wire) -> None:
    model = PacketModel(depth, reorder, urgent, check_ttl)
    box = PacketCensor(PacketPolicy((Rule("reset", sni="telegram.org"),), model))
    for data in wire:
        pkt = parse(data)
        if pkt is not None:
            box.packet(pkt)
    assert len(box.events) <= len(wire)


@given(st.binary(max_size=300))
def test_any_netlink_bytes_read_without_raising(data: bytes) -> None:
    for _kind, _seq, payload in nfqueue.messages(data):
        nfqueue.attributes(payload)
    found, errors = nfqueue.queued_packets(data)
    assert len(found) + len(errors) <= len(data) // 16 + 1
