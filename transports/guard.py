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
    "AddressPolicy",
    "DestinationRefused",
    "LocalAddresses",
    "check_addresses",
    "guarded",
    "normalize_address",
]

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: a v4 address in bits 16-48
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: a v4 address in the last 32 bits


class DestinationRefused(DialError):
    """The destination is one detour never connects to for this client. Nothing was dialed;
    it says nothing about the route's health."""

    def __init__(self, detail: str) -> None:
        super().__init__(Failure.PROXY_REFUSED, Op.CONNECT, detail)


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
    if isinstance(address, ipaddress.IPv6Address):
        embedded = None
        if address in _SIX_TO_FOUR:
            embedded = address.sixtofour
        elif address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = _kind_refused(embedded)
            return f"{inner} inside an IPv6 address" if inner else None
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
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
        raise DestinationRefused(f"{host} is {reason}" if host == str(addresses[0]) else (
            f"{host} resolves to {reason} ({addresses[0]})"
        ))  # fmt: skip
    return allowed
