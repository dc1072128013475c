"""The relay's configuration file (`detour relay -c FILE`), checked like detour's own: every
problem named by its key path.

    [relay]
    listen = "127.0.0.1:8080"   # plain HTTP behind a CDN or nginx (they terminate TLS)
    state = "relay-state"       # keys and clients (relative to this file)
    multiplex = true            # many connections per tunnel for clients that offer it
    # tls_cert = "..."          # serve HTTPS itself instead (own domain, no CDN)
    # tls_key = "..."

    [public]                    # how clients reach the relay: written into access keys
    address = "cdn.example.net:443"
    front = "cdn.example.net"   # the TLS name a censor sees
    host = "relay.example.org"  # the Host the CDN routes to the relay

    [limits]
    connections_per_client = 64
    carriers_per_session = 32   # capped mode: a session's carriers open at once
    idle_timeout = "10m"
    handshake_timeout = "10s"

    [destinations]
    allow = "services"          # or "any"; never loopback, private or link-local addresses
    # public = ["127.77.0.0/16"]  private or loopback ranges that stand for the internet (a
    #                             lab); link-local, multicast, unspecified ones are errors

    [upstream]                  # two hops: destinations through a chain of the relay's own
    # chain = "front:KEY"       # e.g. another relay's access key (that relay is the exit)
    # extra_ca = ["ca.pem"]     # CAs to trust for that chain's TLS besides the system's

    [dns]                       # as in detour's config
    [[service]]                 # as in detour's config, on the built-in services
    # [base]                    # config = "none": only the [[service]] tables here
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transports import Endpoint
from transports.base import IPNetwork
from transports.chain import Chain, ChainError, parse_chain
from transports.resolver import ResolverSpec

from ..config import (
    ConfigError,
    Problems,
    TableReader,
    choice,
    domain,
    flag,
    layer_data,
    parse_duration,
    parse_listen_address,
    string,
)
from ..config.values import ca_file, public_network
from ..services import Service

__all__ = ["RelayConfig", "load_relay_config", "parse_relay_config"]


@dataclass(frozen=True)
class RelayConfig:
    listen: Endpoint
    state: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_address: Endpoint | None = None
    public_front: str | None = None
    public_host: str | None = None
    connections_per_client: int = 64
    carriers_per_session: int = 32
    idle_timeout: float = 600.0
    handshake_timeout: float = 10.0
    allow: str = "services"
    public_networks: tuple[IPNetwork, ...] = ()
    resolver: ResolverSpec = field(default_factory=lambda: ResolverSpec("system"))
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: tuple[Service, ...] = ()
    decoy_server: str = "nginx"
    multiplex: bool = True
    source: str = "relay config"
    upstream: Chain | None = None  # two hops: the chain destinations are reached through
    upstream_ca: tuple[Path, ...] = ()


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 100_000:
        raise ValueError(f"{value!r} is not a count (1-100000)")
    return value


def _carrier_count(value: Any) -> int:
    # A capped client keeps up to 24 carriers open (transports/fronted/capped.py).
    if isinstance(value, bool) or not isinstance(value, int) or not 4 <= value <= 1000:
        raise ValueError(f"{value!r} is not a count of carriers (4-1000)")
    return value


def _endpoint(value: Any) -> Endpoint:
    try:
        return Endpoint.parse(string(value), 443)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


_TOP = ("relay", "public", "limits", "destinations", "dns", "decoy", "service", "base", "upstream")


def _chain(value: Any) -> Chain:
    try:
        return parse_chain(string(value))
    except ChainError as exc:
        raise ValueError(str(exc)) from None


def parse_relay_config(
    text: str, source: str = "relay config", base: Path | None = None
) -> RelayConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source) from None
    problems = Problems()
    top = TableReader("", data, problems, _TOP)
    base = base or Path.cwd()

    def path(value: Any) -> Path:
        p = Path(string(value)).expanduser()
        return p if p.is_absolute() else base / p

    relay = TableReader(
        "relay", top.data.get("relay", {}), problems,
        ("listen", "state", "tls_cert", "tls_key", "multiplex"),
    )  # fmt: skip
    listen = relay.get("listen", parse_listen_address, Endpoint("127.0.0.1", 8080))
    state = relay.get("state", path, None, required=True)
    tls_cert, tls_key = relay.get("tls_cert", path), relay.get("tls_key", path)
    multiplex = relay.get("multiplex", flag, True)
    if (tls_cert is None) != (tls_key is None):
        problems.add("relay", "give both tls_cert and tls_key (or neither, behind a CDN or nginx)")
    relay.finish()

    public = TableReader(
        "public", top.data.get("public", {}), problems, ("address", "front", "host")
    )
    address = public.get("address", _endpoint)
    front = public.get("front", domain)
    host = public.get("host", domain)
    public.finish()

    limits = TableReader(
        "limits", top.data.get("limits", {}), problems,
        ("connections_per_client", "idle_timeout", "handshake_timeout", "carriers_per_session"),
    )  # fmt: skip
    per_client = limits.get("connections_per_client", _positive_int, 64)
    carriers = limits.get("carriers_per_session", _carrier_count, 32)
    idle = limits.get("idle_timeout", parse_duration, 600.0)
    handshake = limits.get("handshake_timeout", parse_duration, 10.0)
    limits.finish()

    dest = TableReader(
        "destinations", top.data.get("destinations", {}), problems, ("allow", "public")
    )
    allow = dest.get("allow", choice(("services", "any")), "services")
    # Link-local, multicast and unspecified ranges never stand for the internet (a cloud
    # machine's metadata service answers on 169.254.169.254); loopback may, for tests.
    public_networks = tuple(
        dest.get_list("public", functools.partial(public_network, loopback=True))
    )
    dest.finish()

    upstream = TableReader(
        "upstream", top.data.get("upstream", {}), problems, ("chain", "extra_ca")
    )
    upstream_chain = upstream.get("chain", _chain)
    upstream_ca = tuple(upstream.get_list("extra_ca", lambda v: ca_file(path(v))))
    upstream.finish()

    decoy = TableReader("decoy", top.data.get("decoy", {}), problems, ("server",))
    decoy_server = decoy.get("server", string, "nginx")
    decoy.finish()

    # [dns] and [[service]] are detour's own sections: read them the way detour reads a file,
    # on the built-in config (its WhatsApp, Telegram, Signal) unless [base] says "none".
    detour = {k: top.data[k] for k in ("base", "dns", "service") if k in top.data}
    detour["route"] = [{"name": "direct", "chain": "direct"}]
    try:
        parsed = layer_data(detour, source, base).config
    except ConfigError as exc:
        problems.items.extend(exc.problems)
        parsed = None
    services: tuple[Service, ...] = parsed.services if parsed else ()
    if parsed is not None and not services and allow == "services":
        problems.add("service", 'destinations.allow = "services" needs a [[service]] table')
    top.finish()
    if problems.items:
        raise ConfigError(problems.items, source)
    return RelayConfig(
        listen=listen,
        state=state,
        tls_cert=tls_cert,
        tls_key=tls_key,
        public_address=address,
        public_front=front,
        public_host=host,
        connections_per_client=per_client,
        carriers_per_session=carriers,
        idle_timeout=idle,
        handshake_timeout=handshake,
        allow=allow,
        public_networks=public_networks,
        resolver=parsed.dns.resolver if parsed else ResolverSpec("system"),
        hosts=parsed.dns.hosts if parsed else {},
        services=services,
        decoy_server=decoy_server,
        multiplex=multiplex,
        source=source,
        upstream=upstream_chain,
        upstream_ca=upstream_ca,
    )


def load_relay_config(path: str | Path) -> RelayConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc}"], str(file)) from None
    return parse_relay_config(text, str(file), file.parent)
