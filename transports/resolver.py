"""Name resolution for the base of a chain.

A Resolver turns a host name into addresses or raises DialError(op=resolve). The system
resolver is the default; `resolve:` layers and `[dns] resolver` configure others (DNS over
HTTPS, TLS, UDP, TCP: transports/dns.py) with the text `parse_resolver` reads; the lab plugs
in its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from .base import DialError, Endpoint, Failure, IPAddress, IPNetwork, Op, classify_os_error
from .deadlines import patient

__all__ = [
    "Resolver",
    "ResolverSpec",
    "StaticResolver",
    "SystemResolver",
    "bogons_in",
    "is_bogon",
    "parse_resolver",
]


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[IPAddress]: ...


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    seen: dict[IPAddress, None] = {}
    for addr in addresses:
        seen.setdefault(addr, None)
    return list(seen)


# Addresses no public name should resolve to (OONI's bogon list): what censoring resolvers
# answer instead of the real address.
_BOGONS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
        "::/127", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip
# Names that are not public, where private answers are normal (RFC 6761, RFC 8375, .internal,
# and the .lan of home routers).
_LOCAL_SUFFIXES = ("localhost", "local", "lan", "home.arpa", "internal", "test")


def is_bogon(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in _BOGONS if net.version == address.version)


def _is_public(name: str) -> bool:
    return "." in name and not any(
        name == suffix or name.endswith("." + suffix) for suffix in _LOCAL_SUFFIXES
    )


def bogons_in(
    name: str, addresses: Iterable[IPAddress], public: tuple[IPNetwork, ...] = ()
) -> list[str]:
    """The addresses in an answer for `name` that no public name has (none for names that are
    not public, like printer.lan): a resolver that answers them lies. `public`: private
    ranges that stand for the internet here (a lab's network)."""
    if not _is_public(name.lower().rstrip(".")):
        return []
    return [
        str(a)
        for a in addresses
        if is_bogon(a) and not any(a in net for net in public if net.version == a.version)
    ]


def _under(name: str, suffixes: Iterable[str]) -> bool:
    name = name.lower().rstrip(".")
    return any(name == s or name.endswith("." + s) for s in suffixes)


class SystemResolver:
    """The operating system's resolver (getaddrinfo), with a timeout it lacks itself.

    Its answers for `checked` names (the services' domains, which are public) get the bogon
    check every resolver's answers get: a private address for them is `dns_bogon_error`, the
    network's resolver lying. Other names are left alone -- a name of the user's own network
    (an intranet, a split-horizon corporate name) may rightly have a private address, and
    the system's resolver is the one that knows such names."""

    def __init__(
        self,
        timeout: float = 5.0,
        *,
        checked: Iterable[str] = (),
        allow_private: bool = False,
        public: tuple[IPNetwork, ...] = (),
    ) -> None:
        self.timeout = timeout
        self.checked = tuple(s.lower().rstrip(".") for s in checked)
        self.allow_private = allow_private
        self.public = public

    async def resolve(self, host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            # Within a probe target, it grows with the loop time lost (deadlines.patient).
            async with patient(self.timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise DialError(
                Failure.DNS_TIMEOUT, Op.RESOLVE, f"no answer for {host} within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise classify_os_error(exc, Op.RESOLVE, f"{host}: {exc.strerror or exc}") from None
        addresses = _unique(
            ipaddress.ip_address(info[4][0].split("%", 1)[0])
            for info in infos
            if info[0] in (socket.AF_INET, socket.AF_INET6)
        )
        if not addresses:
            raise DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {host}")
        if self.checked and not self.allow_private and _under(host, self.checked):
            bogons = bogons_in(host, addresses, self.public)
            if bogons:
                raise DialError(
                    Failure.DNS_BOGON,
                    Op.RESOLVE,
                    f"{host}: the system resolver answered {', '.join(bogons)}, "
                    "an address no public name has (tampering?)",
                )
        return addresses

    def __repr__(self) -> str:
        return "system"


class StaticResolver:
    """Answers from a fixed table (tests, the lab); unknown names are NXDOMAIN unless a
    fallback resolver is given."""

    def __init__(
        self, table: Mapping[str, Iterable[str]], fallback: Resolver | None = None
    ) -> None:
        self.table = {
            name.lower().rstrip("."): [ipaddress.ip_address(a) for a in addrs]
            for name, addrs in table.items()
        }
        self.fallback = fallback

    async def resolve(self, host: str) -> list[IPAddress]:
        key = host.lower().rstrip(".")
        if key in self.table:
            if not self.table[key]:
                raise DialError(Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {host}")
            return list(self.table[key])
        if self.fallback is not None:
            return await self.fallback.resolve(host)
        raise DialError(Failure.DNS_NXDOMAIN, Op.RESOLVE, f"{host}: no such name")


# --- the resolver users configure ----------------------------------------------------------

RESOLVER_SYNTAX = (
    "system, udp=IP[:PORT], tcp=IP[:PORT], dot=HOST[:PORT], doh=https://HOST/PATH; "
    "options after ';': bootstrap=IP[,IP...] (dot, doh), allow_private=true, "
    "public=CIDR[,CIDR...]"
)
_DEFAULT_PORTS = {"udp": 53, "tcp": 53, "dot": 853}
# KIND=ADDRESS, or the URL-like spellings KIND://ADDRESS and doh:https://...
_FORM = re.compile(r"(?P<kind>[A-Za-z]+)(?:=|://|:(?=https://))(?P<address>.*)", re.S)


@dataclass(frozen=True)
class ResolverSpec:
    """A resolver as configured: checked when parsed, built when the engine starts."""

    kind: str  # system, udp, tcp, dot, doh
    server: Endpoint | None = None  # for doh: the URL's host and port
    url: str = ""
    bootstrap: tuple[IPAddress, ...] = ()
    allow_private: bool = False
    public: tuple[IPNetwork, ...] = ()  # private ranges to treat as public (a lab network)

    def build(
        self,
        context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        *,
        checked: Iterable[str] = (),
    ) -> Resolver:
        """The resolver. `checked`: the names (with every name under them) whose answers the
        system resolver checks for bogons -- the services' domains; other resolvers check
        every public name."""
        if self.kind == "system":
            return SystemResolver(
                timeout, checked=checked, allow_private=self.allow_private, public=self.public
            )
        # Imported here: parsing and checking a config needs neither aiohttp nor dnspython.
        from .dns import (
            DnsResolver,
            DnsTransport,
            HttpsTransport,
            TcpTransport,
            TlsTransport,
            UdpTransport,
        )

        assert self.server is not None
        context = context or ssl.create_default_context()
        addresses = self.bootstrap or (ipaddress.ip_address(self.server.host),)
        transport: DnsTransport
        if self.kind == "udp":
            transport = UdpTransport(self.server)
        elif self.kind == "tcp":
            transport = TcpTransport(self.server)
        elif self.kind == "dot":
            transport = TlsTransport(self.server, addresses, context)
        else:
            transport = HttpsTransport(self.url, self.bootstrap, context)
        return DnsResolver(
            transport,
            allow_private=self.allow_private,
            public=self.public,
            timeout=timeout,
            query_id_zero=self.kind == "doh",
        )


def parse_resolver(text: str) -> ResolverSpec:
    """`system`, `udp=IP[:PORT]`, `tcp=...`, `dot=HOST[:PORT]`, `doh=URL`, with `;key=value`
    options. The spellings `udp://IP:PORT`, `tcp://`, `dot://` and `doh:URL` are accepted too.
    Raises ValueError naming the valid forms."""
    text = text.strip()
    head, *options = text.split(";")
    form = _FORM.fullmatch(head.strip())
    kind = form["kind"].lower() if form else ""
    if head.strip().lower() == "system":
        kind = "system"
    elif form is None or kind not in ("udp", "tcp", "dot", "doh") or not form["address"]:
        raise ValueError(f"unknown resolver {text!r} (known: {RESOLVER_SYNTAX})")
    bootstrap: tuple[IPAddress, ...] = ()
    allow_private = False
    public: tuple[IPNetwork, ...] = ()
    for option in options:
        key, _, value = option.partition("=")
        key = key.strip().lower()
        if key == "bootstrap" and kind in ("dot", "doh"):
            try:
                bootstrap = tuple(ipaddress.ip_address(a.strip()) for a in value.split(","))
            except ValueError:
                raise ValueError(
                    f"{text!r}: bootstrap= takes IP addresses, like 1.1.1.1,1.0.0.1"
                ) from None
        elif key == "allow_private" and value.strip().lower() in ("true", "false"):
            allow_private = value.strip().lower() == "true"
        elif key == "public":
            try:
                public = tuple(ipaddress.ip_network(n.strip()) for n in value.split(","))
            except ValueError:
                raise ValueError(
                    f"{text!r}: public= takes CIDR ranges, like 127.77.0.0/16"
                ) from None
        else:
            valid = "allow_private=true|false, public=CIDR[,CIDR...]"
            if kind in ("dot", "doh"):
                valid = "bootstrap=IP[,IP...], " + valid
            raise ValueError(f"{text!r}: unknown option {option.strip()!r} (valid: {valid})")
    if kind == "system":
        return ResolverSpec("system", allow_private=allow_private, public=public)
    assert form is not None
    address = form["address"]
    if kind == "doh":
        server, url = _doh_server(text, address.strip())
    else:
        url = ""
        try:
            server = Endpoint.parse(address, default_port=_DEFAULT_PORTS[kind])
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if server.port == 0:
            raise ValueError(f"{text!r}: port 0 is not a valid resolver port")
    is_ip = server.ip is not None
    if is_ip and bootstrap:
        raise ValueError(f"{text!r}: bootstrap= is only needed when the server is given by name")
    if not is_ip and not bootstrap:
        if kind in ("udp", "tcp"):
            raise ValueError(f"{text!r}: give the resolver's IP address, not a name")
        raise ValueError(
            f"{text!r}: {server.host} is a name; add its addresses with ;bootstrap=IP[,IP...] "
            "(detour never asks the local resolver where its resolver is)"
        )
    return ResolverSpec(kind, server, url, bootstrap, allow_private, public)


def _doh_server(text: str, url: str) -> tuple[Endpoint, str]:
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"{text!r}: not a valid URL (doh=https://HOST[:PORT]/PATH)") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError(f"{text!r}: a DoH server is an https:// URL (doh=https://HOST/PATH)")
    return Endpoint(parts.hostname, port), url
