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

KINDS = st.sampled_from([(SOL_IP, IP_RECVORIGDSTADDR), (SOL_IPV6, IPV6_RECVORIGDSTADDR), (0, 0)])


@given(KINDS, st.binary(max_size=32))
def test_any_control_message_gives_an_address_or_none(kind, data: bytes) -> None:
    found = original_destination([(*kind, data)])
    assert found is None or isinstance(found, Endpoint)


PACKED = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))


@given(PACKED, st.integers(1, 65535))
def test_a_sockaddr_reads_back(packed: bytes, port: int) -> None:
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
