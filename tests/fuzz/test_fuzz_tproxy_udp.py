"""Property tests for transparent UDP's reading of a datagram's original destination
(helper/proxy/tproxy_udp.py): any control message gives an address or None, never an
exception; a sockaddr_in or sockaddr_in6 written for an address reads back as it."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from helper.proxy.tproxy_udp import (
    IP_RECVORIGDSTADDR,
    IPV6_RECVORIGDSTADDR,
    SOL_IP,
    SOL_IPV6,
    original_destination,
)
from transports import Endpoint

KINDS = [(SOL_IP, IP_RECVORIGDSTADDR), (SOL_IPV6, IPV6_RECVORIGDSTADDR), (0, 0)]

# Each property reads its input from one st.binary() draw: the first byte the choice, the
# rest the data (a draw per field cost as much as the property).


def any_control_message_gives_an_address_or_none(draw: bytes) -> None:
    kind, data = KINDS[draw[0] % 3], draw[1:]
    found = original_destination([(*kind, data)])
    assert found is None or isinstance(found, Endpoint)


def a_sockaddr_reads_back(draw: bytes) -> None:
    # IPv4 or IPv6 (the first byte), a port of 1-65535, then the address's bytes.
    port = 1 + (draw[1] << 8 | draw[2]) % 65535
    packed = draw[3:7] if draw[0] % 2 else draw[3:19]
    if len(packed) == 4:
        #      family (host order)             port (network)         addr   zero
        data = (2).to_bytes(2, "little") + port.to_bytes(2, "big") + packed + b"\0" * 8
        message = (SOL_IP, IP_RECVORIGDSTADDR, data)
        expected = str(ipaddress.IPv4Address(packed))
    else:
        #      family (host order)              port (network)        flowinfo  addr  scope
        data = (10).to_bytes(2, "little") + port.to_bytes(2, "big") + b"\0" * 4 + packed + b"\0" * 4
        message = (SOL_IPV6, IPV6_RECVORIGDSTADDR, data)
        address = ipaddress.IPv6Address(packed)
        mapped = address.ipv4_mapped
        expected = str(mapped) if mapped is not None else str(address)
    assert original_destination([message]) == Endpoint(expected, port)


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    draw=st.binary(min_size=1, max_size=33),
    draw_1=st.binary(min_size=19, max_size=19),
)
def test_control_messages_and_sockaddrs(draw, draw_1) -> None:
    any_control_message_gives_an_address_or_none(draw)
    a_sockaddr_reads_back(draw_1)
