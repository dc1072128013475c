"""The relay's configuration file (`detour relay -c FILE`), checked like detour's own: every
problem named by its key path.

    [relay]
    listen = "127.0.0.1:8080"   # plain HTTP behind a CDN or nginx (they terminate TLS)
    state = "relay-state"       # keys and clients (relative to this file)
    multiplex = true            # many connections per tunnel for clients that offer it
    udp = true                  # carry clients' UDP (calls) in multiplexed tunnels
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

Each key is declared once, with its default, converter and documentation, on the fields of
the section dataclasses below (helper/config/schema.py); the generic reader walks them, so
unknown keys are refused with a did-you-mean like in detour's own config, and docs/relay.md's
key tables are generated from them (`python -m helper.config.docs`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transports import Endpoint, redact
from transports.base import IPNetwork
from transports.chain import Chain
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
from ..config.base import BaseTable
from ..config.dns import DnsConfig
from ..config.file import parse_toml
from ..config.routes import ServiceSettings
from ..config.schema import read_section, setting
from ..config.values import ca_file, chain, public_network
from ..services import Service

__all__ = [
    "RELAYS_OWN",
    "RELAY_SECTIONS",
    "RelayConfig",
    "load_relay_config",
    "parse_relay_config",
]


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


def _file(value: Path) -> Path:
    return value  # a file name, already taken relative to the config file (path=True)


# --- the sections: every key declared once ----------------------------------------------


@dataclass(frozen=True, kw_only=True)  # `state` is required, after `listen`
class RelaySection:
    listen: Endpoint = setting(
        "127.0.0.1:8080",
        parse_listen_address,
        "Where the relay listens; plain HTTP when a CDN or nginx terminates TLS in front of it.",
    )
    state: Path = setting(
        convert=_file,
        path=True,
        doc="Its keys and clients, relative to the config file (keep it private; the relay "
        "makes it mode 0700, see [The state directory](#the-state-directory)).",
    )
    tls_cert: Path | None = setting(
        None,
        _file,
        "Serve HTTPS itself (on your own domain, no CDN): the certificate chain (PEM); give "
        "`tls_key` with it.",
        path=True,
    )
    tls_key: Path | None = setting(None, _file, "The key of `tls_cert` (PEM).", path=True)
    multiplex: bool = setting(
        True,
        flag,
        "Carry many connections in one tunnel for clients that ask; see "
        "[below](#many-connections-in-one-tunnel).",
    )
    udp: bool = setting(
        True,
        flag,
        "Carry clients' UDP (calls) in multiplexed tunnels; `false`: none, and clients are "
        'told "the relay carries no UDP"; see [UDP in the tunnel](#udp-in-the-tunnel).',
    )


@dataclass(frozen=True)
class PublicSection:
    address: Endpoint | None = setting(
        None,
        _endpoint,
        "Where clients connect: the CDN edge (or your server), `HOST:PORT` (443 if no port). "
        "Written into access keys.",
    )
    front: str | None = setting(
        None, domain, "The TLS server name clients send: what a censor sees."
    )
    host: str | None = setting(None, domain, "The HTTP Host the CDN routes to your relay.")


@dataclass(frozen=True)
class LimitsSection:
    connections_per_client: int = setting(
        64,
        _positive_int,
        "Tunnels one client may hold open, and connections it may have open inside "
        "multiplexed tunnels (1-100000).",
    )
    carriers_per_session: int = setting(
        32,
        _carrier_count,
        "Capped mode: carriers one session may hold open at once (4-1000). At the limit the "
        "relay first closes the session's carriers it has already ended, and refuses a new "
        "one only when every open one is in use.",
    )
    idle_timeout: float = setting(
        "10m", parse_duration, "A tunnel with no traffic either way for this long is closed."
    )
    handshake_timeout: float = setting(
        "10s", parse_duration, "How long a client may take to send its upgrade request."
    )


@dataclass(frozen=True)
class DestinationsSection:
    allow: str = setting(
        "services",
        choice(("services", "any")),
        "`services`: the services of detour's built-in config (WhatsApp, Telegram, Signal) "
        "with the `[[service]]` tables you add or change, layered as in "
        "[detour's config](configuration.md#layering) (`[base] config = 'none'`: only "
        "yours); `any`: every public destination.",
    )
    # Link-local, multicast and unspecified ranges never stand for the internet (a cloud
    # machine's metadata service answers on 169.254.169.254); loopback may, for tests.
    public: tuple[IPNetwork, ...] = setting(
        [],
        each=functools.partial(public_network, loopback=True),
        doc="Private or loopback ranges that stand for the internet (only for labs and "
        "tests; with it set, the check for the relay's own addresses is off, since a lab is "
        "all on one machine). A range that overlaps link-local (a cloud machine's metadata "
        "service, 169.254.169.254), multicast or unspecified addresses is an error, a "
        "supernet such as `0.0.0.0/0` included, and so is an IPv6 range that carries such "
        "IPv4 addresses.",
    )


@dataclass(frozen=True)
class UpstreamSection:
    chain: Chain | None = setting(
        None,
        chain,
        "Reach destinations through this chain instead of directly: a second hop, most often "
        'another relay\'s access key (`"front:dtr1:..."`); see [Two hops](#two-hops).',
        secret=redact,
    )
    extra_ca: tuple[Path, ...] = setting(
        [],
        each=ca_file,
        path=True,
        doc="CA certificates (PEM files) to trust for that chain's TLS besides the system's "
        "(a private front; tests).",
    )


@dataclass(frozen=True)
class DecoySection:
    server: str = setting(
        "nginx",
        string,
        "The `Server` header of the ordinary website ([The website](#the-website)).",
    )


# The file's top-level keys: the table's name, its schema, and whether it is an array of
# tables (as helper/config/file.py's SECTIONS). [dns], [[service]] and [base] are detour's
# own sections, documented in docs/configuration.md.
RELAY_SECTIONS: dict[str, tuple[type, bool]] = {
    "relay": (RelaySection, False),
    "public": (PublicSection, False),
    "limits": (LimitsSection, False),
    "destinations": (DestinationsSection, False),
    "dns": (DnsConfig, False),
    "decoy": (DecoySection, False),
    "service": (ServiceSettings, True),
    "base": (BaseTable, False),
    "upstream": (UpstreamSection, False),
}
_DETOURS_OWN = ("base", "dns", "service")
RELAYS_OWN = tuple(name for name in RELAY_SECTIONS if name not in _DETOURS_OWN)


def _default(schema: type, key: str) -> Any:
    return next(f.default for f in dataclasses.fields(schema) if f.name == key)


@dataclass(frozen=True)
class RelayConfig:
    """What the relay runs with: the sections above, flattened (defaults are the schema's)."""

    listen: Endpoint
    state: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_address: Endpoint | None = None
    public_front: str | None = None
    public_host: str | None = None
    connections_per_client: int = _default(LimitsSection, "connections_per_client")
    carriers_per_session: int = _default(LimitsSection, "carriers_per_session")
    idle_timeout: float = _default(LimitsSection, "idle_timeout")
    handshake_timeout: float = _default(LimitsSection, "handshake_timeout")
    allow: str = _default(DestinationsSection, "allow")
    public_networks: tuple[IPNetwork, ...] = ()
    resolver: ResolverSpec = field(default_factory=lambda: ResolverSpec("system"))
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    services: tuple[Service, ...] = ()
    decoy_server: str = _default(DecoySection, "server")
    multiplex: bool = _default(RelaySection, "multiplex")
    source: str = "relay config"
    upstream: Chain | None = None  # two hops: the chain destinations are reached through
    upstream_ca: tuple[Path, ...] = ()
    udp: bool = _default(RelaySection, "udp")  # UDP associations in tunnels (udp.py)


def parse_relay_config(
    text: str, source: str = "relay config", base: Path | None = None
) -> RelayConfig:
    data = parse_toml(text, source)
    problems = Problems()
    top = TableReader("", data, problems, tuple(RELAY_SECTIONS))
    base = base or Path.cwd()

    def section(name: str) -> Any:
        schema, _ = RELAY_SECTIONS[name]
        return read_section(schema, name, top.data.get(name, {}), problems, base)

    relay: RelaySection = section("relay")
    if (relay.tls_cert is None) != (relay.tls_key is None):
        problems.add("relay", "give both tls_cert and tls_key (or neither, behind a CDN or nginx)")
    public: PublicSection = section("public")
    limits: LimitsSection = section("limits")
    dest: DestinationsSection = section("destinations")
    upstream: UpstreamSection = section("upstream")
    decoy: DecoySection = section("decoy")

    # [dns] and [[service]] are detour's own sections: read them the way detour reads a file,
    # on the built-in config (its WhatsApp, Telegram, Signal) unless [base] says "none".
    detour = {k: top.data[k] for k in _DETOURS_OWN if k in top.data}
    detour["route"] = [{"name": "direct", "chain": "direct"}]
    try:
        parsed = layer_data(detour, source, base).config
    except ConfigError as exc:
        problems.items.extend(exc.problems)
        parsed = None
    services: tuple[Service, ...] = parsed.services if parsed else ()
    if parsed is not None and not services and dest.allow == "services":
        problems.add("service", 'destinations.allow = "services" needs a [[service]] table')
    top.finish()
    if problems.items:
        raise ConfigError(problems.items, source)
    return RelayConfig(
        listen=relay.listen,
        state=relay.state,
        tls_cert=relay.tls_cert,
        tls_key=relay.tls_key,
        public_address=public.address,
        public_front=public.front,
        public_host=public.host,
        connections_per_client=limits.connections_per_client,
        carriers_per_session=limits.carriers_per_session,
        idle_timeout=limits.idle_timeout,
        handshake_timeout=limits.handshake_timeout,
        allow=dest.allow,
        public_networks=dest.public,
        resolver=parsed.dns.resolver if parsed else ResolverSpec("system"),
        hosts=parsed.dns.hosts if parsed else {},
        services=services,
        decoy_server=decoy.server,
        multiplex=relay.multiplex,
        source=source,
        upstream=upstream.chain,
        upstream_ca=upstream.extra_ca,
        udp=relay.udp,
    )


def load_relay_config(path: str | Path) -> RelayConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file: {file}"], str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:  # not text either: one line, no traceback
        raise ConfigError([f"cannot read: {exc}"], str(file)) from None
    return parse_relay_config(text, str(file), file.parent)
