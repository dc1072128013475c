"""`[listen]`: where applications connect, who may, and how many at once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Endpoint
from transports.base import IPNetwork

from .schema import Problems, complete, read_array, read_section, setting
from .values import (
    WIDEST_CLIENT_RANGE,
    credential,
    internet_wide,
    is_loopback,
    limit,
    network,
    parse_duration,
    parse_listen_address,
    public_network,
)

REMOTE_DEFAULTS = ("deny", "default")


@dataclass(frozen=True)
class User:
    name: str = setting(convert=credential("user name"))
    password: str = setting(convert=credential("password"), secret=True)


def _read_users(path: str, data: Any, problems: Problems, base: Path | None) -> tuple[User, ...]:
    # An array of tables, and a name may appear once: the check needs each entry's path.
    users: list[User] = []
    for entry, values, _ in read_array(User, path, data, problems, base):
        if not complete(User, values):
            continue
        if any(u.name == values["name"] for u in users):
            problems.add(f"{entry}.name", f"user {values['name']!r} is listed twice")
        if ":" in values["name"]:  # RFC 7617: an HTTP client's login splits at the first ':'
            problems.add(
                f"{entry}.name", "a ':' in a user name makes HTTP proxy logins fail; drop it"
            )
        users.append(User(**values))
    return tuple(users)


def _remote_default(value: Any) -> str:
    if value not in REMOTE_DEFAULTS:
        raise ValueError(
            '"deny" (remote clients reach only the services) or "default" (also what '
            "[default] policy allows)"
        )
    return str(value)


def _transparent(value: Any) -> Endpoint:
    endpoint = parse_listen_address(value)
    if not sys.platform.startswith("linux"):
        raise ValueError(
            f"transparent redirect needs Linux (SO_ORIGINAL_DST); this is {sys.platform}"
        )
    return endpoint


@dataclass(frozen=True)
class ListenConfig:
    """Where applications connect."""

    mixed: Endpoint = setting(
        "127.0.0.1:1080",
        parse_listen_address,
        "Address of the mixed port: SOCKS5, SOCKS4/4a and HTTP proxy on one port, told apart "
        'by the first byte a client sends. `"HOST:PORT"` with an IP address (or `localhost`); '
        'IPv6 as `"[::1]:1080"`. Port `0` picks a free port (tests). `detour run --listen` '
        "overrides it.",
    )
    users: tuple[User, ...] = setting(
        [],
        read=_read_users,
        tables=User,
        doc='Logins: `[{ name = "alice", password = "..." }, ...]`. When set, SOCKS5 clients '
        "must log in with user/password (RFC 1929) and HTTP clients with "
        "`Proxy-Authorization: Basic`; SOCKS4 clients, which cannot send a password, are "
        "refused. Names and passwords are 1-255 bytes; a name has no `:` (HTTP logins split "
        "at it).",
    )
    allow: tuple[IPNetwork, ...] = setting(
        [],
        each=network,
        doc='Client allow-list: IP addresses or CIDR ranges (`["192.168.1.0/24", "fd00::/8"]`). '
        "Connections from other addresses are closed before a byte is read. Where it is the "
        "only check (no `users`, or the transparent listener, or the WhatsApp proxy), an entry "
        "with internet addresses wider than /8 (IPv4) or /16 (IPv6), such as `0.0.0.0/0`, is "
        "an error: an open proxy ([router.md](router.md#security-model)).",
    )
    handshake_timeout: float = setting(
        "10s",
        parse_duration,
        "A client that has not finished its SOCKS or HTTP request in this time is disconnected "
        "(an HTTP client mid-head is answered `408 Request Timeout` first).",
    )
    idle_timeout: float = setting(
        "10m",
        parse_duration,
        "A relayed connection on which nothing moved in either direction for this long is "
        "closed. Messaging apps send keep-alives more often than this.",
    )
    # Connections redirected here by nftables/iptables (Linux); None: no such listener.
    transparent: Endpoint | None = setting(
        None,
        _transparent,
        "Linux only: address of the transparent listener, for connections that nftables or "
        'iptables redirected to detour: `"[::]:1090"` for IPv4 and IPv6 redirects on one '
        'socket, `"0.0.0.0:1090"` for IPv4 only. The destination is recovered with '
        "`SO_ORIGINAL_DST`; see [router.md](router.md#transparent-redirect). On other systems "
        "the key is a config error.",
    )
    remote_default: str = setting(
        "deny",
        _remote_default,
        "What clients that are not on loopback (LAN devices) may reach besides the configured "
        'services: `"deny"` nothing else, `"default"` also whatever `[default] policy` allows. '
        "Private, loopback, link-local addresses and the router's own stay refused either way "
        "([router.md](router.md#security-model)).",
    )
    remote_public: tuple[IPNetwork, ...] = setting(
        [],
        each=public_network,
        doc="CIDR ranges that stand for the internet although they are private (a lab or test "
        "network), so LAN clients may reach them. A range overlapping loopback, link-local, "
        "multicast or unspecified addresses (a supernet such as `0.0.0.0/1` too, or an IPv6 "
        "range carrying such IPv4 addresses: NAT64, SIIT, 6to4) is an error; the router's own "
        "addresses stay refused. Leave it unset on a real router.",
    )
    max_connections: int = setting(
        1024,
        limit,
        "Open client connections in all (every listener together); a new one past it is "
        "closed at once. `0`: no limit.",
    )
    max_connections_per_client: int = setting(
        256, limit, "Open connections from one client address. `0`: no limit."
    )
    max_handshakes: int = setting(
        128,
        limit,
        "Connections still in their SOCKS/HTTP handshake (or, on the transparent port, "
        "waiting for their first bytes), in all. `0`: no limit.",
    )
    max_handshakes_per_client: int = setting(
        32,
        limit,
        "The same, from one client address: what keeps one device that opens connections and "
        "never finishes them (slowloris) from starving the others. `0`: no limit.",
    )
    transparent_udp: Endpoint | None = setting(
        None,
        _transparent,
        "Linux only: address of the transparent UDP socket, for datagrams nftables redirects "
        'to detour with TPROXY (calls from LAN devices with no proxy setting): `"[::]:1091"` for '
        'IPv4 and IPv6 on one socket, `"0.0.0.0:1091"` for IPv4 only. Needs root or '
        "CAP_NET_ADMIN. See [udp.md](udp.md#router-transparent-udp).",
    )
    # UDP limits (helper/proxy/udp.py's UdpLimits): SOCKS5 UDP ASSOCIATE and transparent UDP.
    udp_idle_timeout: float = setting(
        "2m",
        parse_duration,
        "A UDP association on which no datagram moved either way for this long ends: a "
        "transparent UDP device's flows (which have no connection to end them), and a SOCKS5 "
        "UDP ASSOCIATE that went silent (its TCP connection is closed). Calls send a datagram "
        "every few seconds. See [udp.md](udp.md#limits-and-lifetime).",
    )
    udp_in_flight: int = setting(
        256,
        limit,
        "Datagrams of one UDP association waiting for their route (a name being resolved, an "
        "upstream's UDP ASSOCIATE under way); more are dropped (`over_limit`). `0`: no limit.",
    )
    udp_in_flight_total: int = setting(
        4096,
        limit,
        "The same in all, every UDP association of a listener together. `0`: no limit.",
    )
    udp_associations_per_client: int = setting(
        32,
        limit,
        "UDP associations open at once from one client address (SOCKS5 UDP ASSOCIATEs, or a "
        "transparent UDP device's source ports); one more is refused. `0`: no limit.",
    )


def read_listen(
    data: Any, problems: Problems, base: Path | None = None, below: ListenConfig | None = None
) -> ListenConfig:
    listen: ListenConfig = read_section(ListenConfig, "listen", data, problems, base, below)
    # Across keys: the address decides whether users or allow are needed.
    check_exposure(listen, problems.add)
    return listen


def check_exposure(listen: ListenConfig, report: Callable[[str, str], None]) -> None:
    """Nothing is an open proxy by accident: a listener other machines can reach needs
    users or an allow-list; the transparent listener, which has no login, an allow-list."""
    if not is_loopback(listen.mixed) and not listen.users and not listen.allow:
        report(
            "listen.mixed",
            f"{listen.mixed} is reachable from other machines; set listen.users (passwords) "
            "or listen.allow (client ranges), or listen on 127.0.0.1",
        )
    if listen.transparent is not None and not is_loopback(listen.transparent) and not listen.allow:
        report(
            "listen.transparent",
            f"{listen.transparent} is reachable from other machines and has no login; set "
            'listen.allow to the LAN\'s client ranges (e.g. ["192.168.1.0/24"])',
        )
    udp = listen.transparent_udp
    if udp is not None and not is_loopback(udp) and not listen.allow:
        report(
            "listen.transparent_udp",
            f"{udp} is reachable from other machines and has no login; set listen.allow to "
            'the LAN\'s client ranges (e.g. ["192.168.1.0/24"])',
        )
    without_login = listeners_without_login(listen)
    if without_login:
        check_allow_width(listen, " and ".join(without_login), report)


def listeners_without_login(listen: ListenConfig) -> list[str]:
    """The [listen] listeners other machines reach without a password (allow-list only)."""
    exposed = {
        "listen.mixed": not is_loopback(listen.mixed) and not listen.users,
        "listen.transparent": listen.transparent is not None
        and not is_loopback(listen.transparent),
        "listen.transparent_udp": listen.transparent_udp is not None
        and not is_loopback(listen.transparent_udp),
    }
    return [key for key, open_ in exposed.items() if open_]


def check_allow_width(
    listen: ListenConfig, listeners: str, report: Callable[[str, str], None]
) -> None:
    """An allow-list that lets in a large part of the internet is refused where it is the
    only check (no passwords): `allow = ["0.0.0.0/0"]` would make an open proxy."""
    for i, net in enumerate(listen.allow):
        if internet_wide(net):
            report(
                f"listen.allow[{i}]",
                f"{net} lets in a large part of the internet (wider than "
                f"/{WIDEST_CLIENT_RANGE[net.version]} with internet addresses) without a "
                f"password ({listeners}): an open proxy. List your clients' ranges, or set "
                "listen.users (passwords) for the mixed port",
            )
