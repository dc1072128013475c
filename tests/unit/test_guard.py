"""The destination policy for clients that are not on loopback (transports.guard): which
addresses are refused, the lab's stand-in public ranges, this machine's own addresses, and the
check on resolved addresses that defeats DNS rebinding."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports import Endpoint
from transports.direct import DirectDialer
from transports.guard import (
    AddressPolicy,
    DestinationRefused,
    LocalAddresses,
    check_addresses,
    guarded,
    parse_fib_trie,
)
from transports.resolver import StaticResolver

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("100.127.255.254", "a shared (carrier-grade NAT) address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("224.0.0.1", "a multicast or broadcast address"),
        ("239.255.255.250", "a multicast or broadcast address"),
        ("ff02::1", "a multicast or broadcast address"),
        ("255.255.255.255", "a multicast or broadcast address"),
        ("192.0.2.1", "a documentation address"),
        ("198.51.100.7", "a documentation address"),
        ("203.0.113.9", "a documentation address"),
        ("2001:db8::1", "a documentation address"),
        ("198.18.0.1", "a benchmarking address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.0.170", "a special-use address"),
        ("100::1", "a special-use address"),
        ("2002:7f00:1::", "a loopback address inside an IPv6 address"),
        ("2002:c0a8:101::", "a private address inside an IPv6 address"),
        ("64:ff9b::a00:1", "a private address inside an IPv6 address"),
        # SIIT/NAT64 forms, classified by the IPv4 address they carry (once taken as global)
        ("::a9fe:a9fe", "a link-local address inside an IPv6 address"),
        ("::ffff:0:a9fe:a9fe", "a link-local address inside an IPv6 address"),
        ("64:ff9b:1::a9fe:a9fe", "a link-local address inside an IPv6 address"),
        ("64:ff9b:1:a9fe:a9:fe00::", "a link-local address inside an IPv6 address"),  # /48
        ("64:ff9b:1:0:a9:fea9:fe00::", "a link-local address inside an IPv6 address"),  # /64
        ("::ffff:0:808:808", None),
        ("64:ff9b:1::808:808", None),
        ("64:ff9b::808:808", None),
        ("8.8.8.8", None),
        ("149.154.167.51", None),
        ("2001:4860:4860::8888", None),
        ("2002:808:808::", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_refused_kinds(address: str, reason: str | None) -> None:
    assert AddressPolicy().refusal(ip(address)) == reason


def test_public_ranges_stand_for_the_internet() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.201.0.0/24")])
    assert policy.refusal(ip("10.201.0.9")) is None
    assert policy.refusal(ip("10.202.0.9")) == "a private address"


class _Own(LocalAddresses):
    def __init__(self, *addresses: str) -> None:
        super().__init__(proc=None)
        self.addresses = {ip(a) for a in addresses}

    def __contains__(self, address: object) -> bool:
        return address in self.addresses


def test_own_addresses_refused_even_in_public_ranges() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.201.0.0/24")], _Own("10.201.0.1", "8.8.4.4"))
    assert policy.refusal(ip("10.201.0.1")) == "an address of this machine"
    assert policy.refusal(ip("8.8.4.4")) == "an address of this machine"
    assert policy.refusal(ip("10.201.0.2")) is None


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 4
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 203.0.113.0/24 2 0 2
           |-- 203.0.113.0
              /24 link UNICAST
           |-- 203.0.113.7
              /32 host LOCAL
"""


def test_fib_trie_local_entries() -> None:
    found = set(parse_fib_trie(FIB_TRIE))
    assert found == {
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("203.0.113.7/32"),
    }


def test_local_addresses_from_proc(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(
        "20010db8000000000000000000000005 02 40 00 80     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    local = LocalAddresses(proc=tmp_path)
    assert ip("203.0.113.7") in local
    assert ip("::ffff:203.0.113.7") in local
    assert ip("2001:db8::5") in local
    assert ip("203.0.113.8") not in local


@pytest.mark.parametrize("proc", ["auto", None])
def test_local_addresses_of_this_machine(proc) -> None:
    local = LocalAddresses(proc=proc)
    assert ip("127.0.0.1") in local
    assert ip("127.0.0.1") in local  # cached
    assert ip("8.8.8.8") not in local


@pytest.mark.skipif(not Path("/proc/net/fib_trie").exists(), reason="no /proc/net/fib_trie")
def test_local_addresses_from_the_real_proc() -> None:
    local = LocalAddresses(proc=Path("/proc/net"))
    assert ip("127.0.0.1") in local
    assert ip("8.8.8.8") not in local


def test_check_addresses_only_for_the_guarded_host() -> None:
    addresses = [ip("127.0.0.1")]
    assert check_addresses("rebind.example", addresses) == addresses
    with guarded("rebind.example", AddressPolicy()):
        assert check_addresses("doh.example", addresses) == addresses
        with pytest.raises(DestinationRefused, match="resolves to a loopback address"):
            check_addresses("Rebind.Example.", addresses)
        mixed = [ip("127.0.0.1"), ip("8.8.8.8")]
        assert check_addresses("rebind.example", mixed) == [ip("8.8.8.8")]
    assert check_addresses("rebind.example", addresses) == addresses


async def test_direct_dialer_refuses_a_name_resolving_to_loopback() -> None:
    dialer = DirectDialer(StaticResolver({"rebind.example": ("127.0.0.1",)}))
    with guarded("rebind.example", AddressPolicy()), pytest.raises(DestinationRefused):
        await dialer.dial(Endpoint("rebind.example", 22))


async def test_guard_follows_into_tasks_not_other_connections() -> None:
    policy = AddressPolicy()
    seen: list[bool] = []

    async def other_connection() -> None:
        await asyncio.sleep(0)
        seen.append(check_addresses("x.example", [ip("10.0.0.1")]) == [ip("10.0.0.1")])

    other = asyncio.ensure_future(other_connection())
    with guarded("x.example", policy):

        async def inner() -> None:
            with pytest.raises(DestinationRefused):
                check_addresses("x.example", [ip("10.0.0.1")])

        await asyncio.ensure_future(inner())
        await other
    assert seen == [True]


def ipv4_allowed_only_when_global_unicast(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    allowed = AddressPolicy().refusal(address) is None
    expected = (
        address.is_global
        and not address.is_multicast
        and address not in ipaddress.ip_network("100.64.0.0/10")
    )
    assert allowed == expected
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert AddressPolicy().refusal(mapped) == AddressPolicy().refusal(address)


def ipv6_never_allows_what_is_not_global(value: int) -> None:
    address = ipaddress.IPv6Address(value)
    if AddressPolicy().refusal(address) is None:
        assert address.is_global and not address.is_multicast


def _carriers(v4: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """Every IPv6 form that carries `v4` to a translator."""
    n = int(v4)
    forms = [
        n,
        0xFFFF << 32 | n,
        0x64FF9B << 96 | n,
        0x64FF9B0001 << 80 | n,
        0x2002 << 112 | n << 80,
    ]
    return [ipaddress.IPv6Address(form) for form in forms]


def ipv6_forms_carrying_ipv4_are_judged_by_it(value: int) -> None:
    """::a.b.c.d, ::ffff:0:a.b.c.d, 64:ff9b::a.b.c.d and 2002:a.b.c.d:: are refused exactly
    when a.b.c.d is (but :: and ::1 themselves); 64:ff9b:1::a.b.c.d at least then."""
    address = ipaddress.IPv4Address(value)
    refused = AddressPolicy().refusal(address) is not None
    *fixed, local_use, six_to_four = _carriers(address)
    for carrier in [*fixed, six_to_four]:
        if carrier in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
            continue
        assert (AddressPolicy().refusal(carrier) is not None) == refused, carrier
    # A local-use NAT64 address is read in every format its prefix may have: refused when
    # any reading is (64:ff9b:1::1.0.0.0 is also 0.0.0.1 in the /64 format).
    if refused:
        assert AddressPolicy().refusal(local_use) is not None


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    value=st.integers(min_value=0, max_value=2**32 - 1),
    value_1=st.integers(min_value=0, max_value=2**128 - 1),
    value_2=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_ipv4_and_ipv6_addresses_are_judged_as_the_kernel_routes(value, value_1, value_2) -> None:
    ipv4_allowed_only_when_global_unicast(value)
    ipv6_never_allows_what_is_not_global(value_1)
    ipv6_forms_carrying_ipv4_are_judged_by_it(value_2)
