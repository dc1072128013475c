"""Services: what a user wants to reach (WhatsApp, Telegram, Signal, ...), described by the
domains, address ranges and ports its apps connect to, and the endpoints to probe it with.

The router asks `ServiceTable.match` which service a destination belongs to; a destination
that matches none follows the `[default]` policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from transports import Endpoint
from transports.base import IPNetwork

__all__ = ["ProbeTarget", "Service", "ServiceTable", "UdpProbeTarget", "normalize_domain"]


PROBE_KINDS = {"tcp": None, "tls": 443, "https": 443, "http": 80, "mtproto": 443}


def normalize_domain(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _probe_url(
    text: str, kinds: dict[str, int | None], what: str
) -> tuple[SplitResult, str, int | None]:
    """A probe target's URL, its kind (one of `kinds`) and its port (the kind's default when
    it names none; None when the kind has no default), or ValueError naming the problem."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    kind = url.scheme.lower()
    if kind not in kinds:
        known = ", ".join(f"{k}://" for k in kinds)
        raise ValueError(f"{text!r}: unknown {what} kind '{kind}' (known: {known})")
    if not url.hostname:
        raise ValueError(f"{text!r}: missing host")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is not a valid port")
    return url, kind, port or kinds[kind]


@dataclass(frozen=True)
class ProbeTarget:
    """An endpoint a probe checks: `tcp://host:port` (connect), `tls://host:port` (connect
    and TLS handshake with that SNI, certificate checked), `https://host/path` and
    `http://host/path` (a request), `mtproto://address:port` (a Telegram DC: MTProto's
    first, unencrypted request, req_pq_multi, answered by resPQ; port 443 by default)."""

    kind: str
    endpoint: Endpoint
    path: str = "/"
    # `#no-verify`: accept any certificate (Signal's servers present Signal's own CA); the
    # probe still sees resets, timeouts and block pages, not interception.
    verify: bool = True

    @classmethod
    def parse(cls, text: str) -> ProbeTarget:
        url, kind, port = _probe_url(text, PROBE_KINDS, "probe")
        if port is None:
            raise ValueError(f"{text!r}: tcp:// probes need a port (tcp://HOST:PORT)")
        if kind in ("tcp", "tls", "mtproto") and url.path not in ("", "/"):
            raise ValueError(f"{text!r}: {kind}:// probes take no path")
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        if url.fragment not in ("", "no-verify"):
            raise ValueError(f"{text!r}: unknown option #{url.fragment} (valid: #no-verify)")
        if url.fragment and kind not in ("tls", "https"):
            raise ValueError(f"{text!r}: #no-verify is for tls:// and https:// probes")
        return cls(kind, Endpoint(url.hostname, port), path, verify=not url.fragment)

    def __str__(self) -> str:
        suffix = self.path if self.kind in ("http", "https") else ""
        return f"{self.kind}://{self.endpoint}{suffix}" + ("" if self.verify else "#no-verify")


UDP_PROBE_KINDS = {"stun": 3478, "udp-echo": None}


@dataclass(frozen=True)
class UdpProbeTarget:
    """A UDP endpoint a probe checks (helper/probe/udp.py): `stun://host[:port]` (a STUN
    binding request, port 3478 by default) or `udp-echo://host:port` (a datagram that must
    come back as sent)."""

    kind: str
    endpoint: Endpoint

    @classmethod
    def parse(cls, text: str) -> UdpProbeTarget:
        url, kind, port = _probe_url(text, UDP_PROBE_KINDS, "UDP probe")
        if port is None:
            raise ValueError(f"{text!r}: udp-echo:// probes need a port (udp-echo://HOST:PORT)")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise ValueError(f"{text!r}: UDP probes take no path or options")
        return cls(kind, Endpoint(url.hostname, port))

    def __str__(self) -> str:
        return f"{self.kind}://{self.endpoint}"


@dataclass(frozen=True)
class Service:
    name: str
    domains: tuple[str, ...] = ()
    cidrs: tuple[IPNetwork, ...] = ()
    ports: frozenset[int] = frozenset()  # empty: any port
    probes: tuple[ProbeTarget, ...] = ()
    routes: tuple[str, ...] = ()  # route names in order; empty: every route, config order
    udp_probes: tuple[UdpProbeTarget, ...] = ()  # STUN / UDP echo endpoints (calls)
    _suffixes: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_suffixes", tuple("." + d for d in self.domains))

    def matches(self, target: Endpoint) -> bool:
        if self.ports and target.port not in self.ports:
            return False
        ip = target.ip
        if ip is not None:
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is an IPv4 destination
            return any(ip in net for net in self.cidrs if net.version == ip.version)
        host = normalize_domain(target.host)
        return host in self.domains or host.endswith(self._suffixes)


class ServiceTable:
    """Services in config order; the first that matches a destination wins."""

    def __init__(self, services: Iterable[Service]) -> None:
        self.services = list(services)

    def match(self, target: Endpoint) -> Service | None:
        for service in self.services:
            if service.matches(target):
                return service
        return None

    def __iter__(self):
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)
