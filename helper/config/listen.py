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
    credential,
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
        "refused. Names and passwords are 1-255 bytes.",
    )
    allow: tuple[IPNetwork, ...] = setting(
        [],
        each=network,
        doc='Client allow-list: IP addresses or CIDR ranges (`["192.168.1.0/24", "fd00::/8"]`). '
        "Connections from other addresses are closed before a byte is read.",
    )
    handshake_timeout: float = setting(
        "10s",
        parse_duration,
        "A client that has not finished its SOCKS or HTTP request in this time is disconnected.",
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
        "network), so LAN clients may reach them. Never loopback, link-local or multicast "
        "ranges; the router's own addresses stay refused. Leave it unset on a real router.",
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
