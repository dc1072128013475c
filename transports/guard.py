"""Which addresses detour may connect to on someone else's behalf.

A proxy that other machines use must not become their way into places they could not reach
themselves: the proxy's own loopback services (an SSH daemon on 127.0.0.1:22, a router's web
admin), the LAN behind it, link-local metadata services, or the machine's own public address.
One policy serves every place that dials for another party: the mixed and transparent
listeners for clients that are not on loopback, and the fronted-tunnel relay.

The check has to happen where names become addresses, right before connecting: checking a
name's addresses once and connecting later lets a DNS server answer differently the second
time (DNS rebinding). So the listener marks the destination it is about to dial with
`guarded(host, policy)`; the base `direct` dialer calls `check_addresses` with the addresses
it resolved for that very host and connects only to the ones the policy allows. The mark is a
context variable: it belongs to the one connection's task (and the tasks it starts), never to
other connections, and a route's other connections (a DoH server, an upstream proxy) have
other host names, so they are not affected.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .base import DialError, Failure, IPAddress, IPNetwork, Op

__all__ = [
    "NEVER_PUBLIC_RANGES",
    "AddressPolicy",
    "DestinationRefused",
    "LocalAddresses",
    "check_addresses",
    "embedded_ipv4",
    "embedded_ipv4_networks",
    "guarded",
    "normalize_address",
]

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# What Python's `is_private` lumps together, told apart for the refusal's wording (the
# verdict is the same): RFC 1918 and unique local (RFC 4193) are private proper; the
# documentation (RFC 5737, 3849, 9637), benchmarking (RFC 2544, 5180) and reserved (RFC 1112)
# ranges are not anyone's network; the rest of the non-global ones are special-use (RFC 6890).
_KINDS: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (kind, tuple(ipaddress.ip_network(net) for net in nets))
    for kind, nets in (
        ("a private address", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
        (
            "a documentation address",
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
        ),
        ("a benchmarking address", ("198.18.0.0/15", "2001:2::/48")),
        ("a reserved address", ("240.0.0.0/4",)),
    )
)
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: a v4 address in bits 16-48
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: a v4 address in the last 32 bits
# IPv6 addresses that carry an IPv4 address in their last 32 bits to a translator (SIIT,
# NAT64) or to an old stack: IPv4-compatible (RFC 4291, deprecated), IPv4-translated
# (RFC 2765), IPv4-mapped (RFC 4291; detour reads these as IPv4 before anything else).
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
# RFC 8215: a network's own NAT64 prefix, in any of RFC 6052's formats (its length is the
# operator's choice, so every reading of an address in it counts).
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# RFC 6052 2.2: where a prefix of each length puts the IPv4 address (bit ranges; bits 64-71,
# the "u" octet, are never used, and the bits after the IPv4 address are zero).
_RFC6052 = {48: ((48, 64), (72, 88)), 56: ((56, 64), (72, 96)), 64: ((72, 104),), 96: ((96, 128),)}
# IPv6 ranges whose addresses carry an IPv4 address, the one place each puts it.
EMBEDDING = (_V4_COMPATIBLE, _V4_TRANSLATED, _V4_MAPPED, _NAT64, _NAT64_LOCAL, _SIX_TO_FOUR)


class DestinationRefused(DialError):
    """The destination is one detour never connects to for this client. Nothing was dialed;
    it says nothing about the route's health."""

    def __init__(self, detail: str, *, host: str = "", address: IPAddress | None = None) -> None:
        super().__init__(Failure.PROXY_REFUSED, Op.CONNECT, detail)
        self.host = host  # the name (or address) refused, and the answer that refused it
        self.address = address


def _bits(value: int, start: int, end: int) -> int:
    return (value >> (128 - end)) & ((1 << (end - start)) - 1)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may stand for behind a translator (6to4, NAT64,
    SIIT, the IPv4-compatible form): one, or for a local-use NAT64 prefix every reading its
    formats allow. Empty for other addresses."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    if address in _SIX_TO_FOUR:
        return [address.sixtofour] if address.sixtofour is not None else []
    value = int(address)
    if address in _NAT64_LOCAL:
        readings = []
        for length, spans in _RFC6052.items():
            last = spans[-1][1]
            if length < 96 and (_bits(value, 64, 72) or (last < 128 and _bits(value, last, 128))):
                continue  # not an address of this format
            embedded = 0
            for start, end in spans:
                embedded = embedded << (end - start) | _bits(value, start, end)
            readings.append(ipaddress.IPv4Address(embedded))
        return readings
    if any(address in net for net in (_NAT64, _V4_COMPATIBLE, _V4_TRANSLATED, _V4_MAPPED)):
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    return []


def embedded_ipv4_networks(net: IPNetwork) -> list[ipaddress.IPv4Network]:
    """The IPv4 ranges the addresses of an IPv6 range may stand for (embedded_ipv4): the
    part inside each embedding range, or all of IPv4 where it covers one whole or is a
    local-use NAT64 prefix (whose format is not known)."""
    if not isinstance(net, ipaddress.IPv6Network):
        return []
    everything = ipaddress.IPv4Network("0.0.0.0/0")
    found = []
    for prefix in EMBEDDING:
        if not net.overlaps(prefix):
            continue
        if prefix is _NAT64_LOCAL or net.prefixlen <= prefix.prefixlen:
            found.append(everything)
        elif prefix is _SIX_TO_FOUR:
            length = min(net.prefixlen, 48) - 16
            found.append(ipaddress.IPv4Network((_bits(int(net.network_address), 16, 48), length)))
        else:
            found.append(
                ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
            )
    return found


def normalize_address(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class LocalAddresses:
    """The addresses of this machine's interfaces, answers kept for `ttl` seconds.

    An address is this machine's when a socket can be bound to it: cheap, right for the
    network namespace detour runs in, and the same on every system. Where the kernel lets
    sockets bind to any address (Linux's ip_nonlocal_bind, set on some routers for failover
    addresses), the kernel's tables are read instead (`proc`: /proc/net/fib_trie, every
    "host LOCAL" entry, which includes local ranges like 127.0.0.0/8; /proc/net/if_inet6).
    """

    def __init__(self, ttl: float = 5.0, *, proc: Path | str | None = "auto") -> None:
        self.ttl = ttl
        if proc == "auto":
            proc = Path("/proc/net") if _nonlocal_bind() else None
        self.proc = proc if isinstance(proc, Path) else None
        self._networks: tuple[IPNetwork, ...] = ()
        self._read_at = -float("inf")
        self._probed: dict[IPAddress, tuple[bool, float]] = {}

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        address = normalize_address(address)
        now = time.monotonic()
        if self.proc is not None:
            if now - self._read_at > self.ttl:
                self._networks = tuple(self._read_proc(self.proc))
                self._read_at = now
            return any(address in net for net in self._networks if net.version == address.version)
        cached = self._probed.get(address)
        if cached is not None and now - cached[1] <= self.ttl:
            return cached[0]
        if len(self._probed) >= 4096:
            self._probed.clear()
        local = _bindable(address)
        self._probed[address] = (local, now)
        return local

    @staticmethod
    def _read_proc(proc: Path) -> Iterator[IPNetwork]:
        try:
            trie = (proc / "fib_trie").read_text()
        except OSError:
            trie = ""
        yield from parse_fib_trie(trie)
        try:
            inet6 = (proc / "if_inet6").read_text()
        except OSError:
            inet6 = ""
        for line in inet6.splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                try:
                    yield ipaddress.IPv6Network(int(fields[0], 16))
                except ValueError:
                    continue


def parse_fib_trie(text: str) -> Iterator[IPNetwork]:
    """The local ranges in /proc/net/fib_trie: a `|-- ADDRESS` line, then `/LEN host LOCAL`."""
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:].strip()
        elif last is not None and stripped.startswith("/") and stripped.endswith("host LOCAL"):
            try:
                yield ipaddress.IPv4Network(f"{last}{stripped.split()[0]}", strict=False)
            except ValueError:
                continue


def _nonlocal_bind() -> bool:
    """Whether this (Linux) network namespace lets sockets bind to addresses it lacks."""
    if not sys.platform.startswith("linux"):
        return False
    for family in ("ipv4", "ipv6"):
        try:
            if Path(f"/proc/sys/net/{family}/ip_nonlocal_bind").read_text().strip() != "0":
                return True
        except OSError:
            continue
    return False


def _bindable(address: IPAddress) -> bool:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((str(address), 0))
    except OSError:
        return False
    return True


class AddressPolicy:
    """Decides which destination addresses another party may make detour connect to.

    Refused always: loopback, private (RFC 1918, fc00::/7), shared (100.64.0.0/10),
    link-local, unspecified, multicast and broadcast, reserved and documentation ranges --
    everything that is not a global unicast address -- and, with `local`, this machine's own
    addresses. `public` lists ranges that stand for the internet although they are not
    global (a lab or test network); an own address stays refused even there.
    """

    def __init__(
        self, public: Sequence[IPNetwork] = (), local: LocalAddresses | None = None
    ) -> None:
        self.public = tuple(public)
        self.local = local

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused (a phrase like "a private address"), or None if allowed."""
        address = normalize_address(address)
        if not any(address in net for net in self.public if net.version == address.version):
            kind = _kind_refused(address)
            if kind is not None:
                return kind
        if self.local is not None and address in self.local:
            return "an address of this machine"
        return None

    def allowed(self, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        return [a for a in addresses if self.refusal(a) is None]


# What a `public` range may never hold (listen.remote_public refuses ranges that overlap
# any: helper/config/values.py).
NEVER_PUBLIC_RANGES: dict[str, tuple[IPNetwork, ...]] = {
    "loopback": (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
    "unspecified": (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128")),
    "link-local": (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")),
    "multicast": (
        ipaddress.ip_network("224.0.0.0/4"),
        ipaddress.ip_network("255.255.255.255/32"),
        ipaddress.ip_network("ff00::/8"),
    ),
}


def _kind_refused(address: IPAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast or address == _LIMITED_BROADCAST:
        return "a multicast or broadcast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    readings = embedded_ipv4(address)
    if readings:  # classified by what it carries: a translator would connect there
        for embedded in readings:
            inner = _kind_refused(embedded)
            if inner is not None:
                return f"{inner} inside an IPv6 address"
        return None
    for kind, nets in _KINDS:
        if any(address in net for net in nets if net.version == address.version):
            return kind
    if address.is_private or not address.is_global:
        return "a special-use address"
    return None


# --- marking the destination a connection is for --------------------------------------------

_guard: ContextVar[tuple[str, AddressPolicy] | None] = ContextVar("detour_guard", default=None)


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@contextmanager
def guarded(host: str, policy: AddressPolicy) -> Iterator[None]:
    """While inside, the `direct` dialer connects to `host` only at addresses `policy` allows
    (in this task and the tasks it starts)."""
    token = _guard.set((_host_key(host), policy))
    try:
        yield
    finally:
        _guard.reset(token)


def check_addresses(host: str, addresses: list[IPAddress]) -> list[IPAddress]:
    """The addresses of `host` that may be dialed: all of them unless `host` is the guarded
    destination; raises DestinationRefused when the policy allows none."""
    mark = _guard.get()
    if mark is None or _host_key(host) != mark[0]:
        return addresses
    policy = mark[1]
    allowed = policy.allowed(addresses)
    if not allowed and addresses:
        reason = policy.refusal(addresses[0])
        raise DestinationRefused(
            f"{host} is {reason}" if host == str(addresses[0]) else (
                f"{host} resolves to {reason} ({addresses[0]})"
            ),
            host=host,
            address=addresses[0],
        )  # fmt: skip
    return allowed
