"""`[[route]]`, `[[service]]` and `[default]`: the ways out, what users want to reach, and
what happens to everything else. These sections refer to each other (a service's routes, the
default policy), so after the schema has read them, the checks across them run here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transports import Chain, redact
from transports.base import IPNetwork

from ..services import ProbeTarget, Service, UdpProbeTarget
from .base import OTHER_ROUTES
from .schema import Problems, complete, read_array, setting
from .values import (
    chain,
    choice,
    domain,
    entry_name,
    flag,
    network,
    parse_duration,
    port,
    probe_target,
    string,
)

DENY = "deny"
FOUND_PREFIX = "found-"  # the routes a strategy search finds (helper/search/candidates.py)
# `[[route]] when`: conditions under which a route exists.
LINUX, LISTENING = "linux", "listening"


@dataclass(frozen=True)
class RouteConfig:
    name: str = setting(
        convert=entry_name,
        doc="1-64 letters, digits, `.`, `_`, `-`; unique. `deny` is reserved, and so are "
        "names that start with `found-` (the routes a strategy search finds, "
        "[search.md](search.md)).",
    )
    chain: Chain = setting(
        convert=chain,
        secret=redact,
        doc="The transports this route goes through; see [transports.md](transports.md). E.g. "
        '`"direct"`, `"tlsfrag:sni"`, `"resolve:doh=https://1.1.1.1/dns-query \\| '
        'tlsfrag:sni"`, `"socks5://user:pass@10.0.0.2:1080"`, `"socks5://127.0.0.1:9050 \\| '
        'http://proxy:3128"`.',
    )
    timeout: float = setting(
        "10s",
        parse_duration,
        "How long one connection attempt through the route may take in total — resolving, "
        "connecting and every proxy handshake on its chain — before it fails with "
        "`generic_timeout_error` during the step that was running and the next route is "
        "tried. Each step is also bounded by this time on its own, except a `resolve:` "
        "layer's lookup, which gives up after half of it (at least `[dns] timeout`) with "
        "`dns_timeout`, so the connect after it has time left. A probe's connect step gets "
        "the same limit. See [routing.md](routing.md#a-routes-timeout).",
    )
    when: str | None = setting(
        None,
        choice((LINUX, LISTENING)),
        '`"linux"`: the route exists on Linux only (its chain acts on packets: `fake`, '
        "`disorder`, `oob`); elsewhere it is left out of the config, without a problem. "
        '`"listening"`: the route exists while the proxy at the start of its chain accepts '
        "connections, checked when detour starts and on every reload (a local Tor's "
        "`socks5://127.0.0.1:9050`); until then it is left out. See "
        "[routing.md](routing.md#the-built-in-cascade).",
        shown="always",
    )
    udp: bool = setting(
        True,
        flag,
        "`false`: the route carries no UDP although its kind could (a SOCKS5 proxy that refuses "
        "UDP ASSOCIATE, as Tor, microsocks and `ssh -D` do): UDP probes and SOCKS5 clients' "
        "datagrams skip it instead of failing through it. See "
        "[udp.md](udp.md#which-routes-carry-udp).",
    )


@dataclass(frozen=True)
class ServiceSettings:
    """A `[[service]]` table as written; read into a `helper.services.Service`, which the
    router uses and which knows nothing of the file."""

    name: str = setting(convert=entry_name, doc="Unique; the same characters as route names.")
    domains: tuple[str, ...] = setting(
        [],
        each=domain,
        doc='Domain suffixes: `"telegram.org"` matches `telegram.org` and every name under it '
        "(`web.telegram.org`), not `nottelegram.org`. A leading `*.` is accepted and means "
        "the same.",
    )
    cidrs: tuple[IPNetwork, ...] = setting(
        [],
        each=network,
        doc="Address ranges for destinations given as IP addresses (IPv4 or IPv6; IPv4-mapped "
        "IPv6 addresses match IPv4 ranges). A range with host bits set is an error with the "
        "corrected range suggested.",
    )
    ports: frozenset[int] = setting(
        [],
        each=port,
        collect=frozenset,
        doc="If set, only these destination ports belong to the service.",
        shown="any port",
    )
    probes: tuple[ProbeTarget, ...] = setting(
        [],
        each=probe_target,
        doc="Endpoints that show whether the service works through a route (it works when all "
        "of them do): `tcp://HOST:PORT` (connect), `tls://HOST:PORT` (connect and TLS "
        "handshake with that server name, certificate checked), `https://HOST/PATH` and "
        "`http://HOST[:PORT]/PATH` (a GET; any HTTP answer counts, a block page does not; the "
        "body is read to measure the rate). `#no-verify` after a `tls://` or `https://` target "
        "accepts any certificate (Signal's servers use Signal's own CA). "
        "`mtproto://ADDRESS[:PORT]` (port 443 by default) is a Telegram DC: MTProto's first "
        "request, obfuscated as the apps send it, must be answered by a valid resPQ "
        "([telegram.md](telegram.md)). A target a route cannot carry at all (anything but a "
        "DC through a `tgws` route) is skipped for that route.",
    )
    routes: tuple[str, ...] = setting(
        [],
        each=string,
        doc='Route names in the order to try them for this service. `"..."` among them '
        "stands for the routes the service would have without the list, less those named: "
        '`["my-vps", "..."]` tries `my-vps` first ([Layering](#layering)).',
        shown="every route, in order",
    )
    udp_probes: tuple[UdpProbeTarget, ...] = setting(
        [],
        each=lambda value: UdpProbeTarget.parse(string(value)),
        doc="UDP endpoints that show whether a route carries the service's calls, probed "
        "apart from `probes` ([udp.md](udp.md)): `stun://HOST[:PORT]` (a STUN binding "
        "request, port 3478 by default) and `udp-echo://HOST:PORT` (a datagram that must "
        "come back as sent).",
    )


@dataclass(frozen=True)
class DefaultTable:
    """`[default]`: destinations that belong to no service."""

    policy: str | None = setting(
        None,
        string,
        "What happens to destinations that belong to no `[[service]]`: the name of a route, "
        'or `"deny"` (the client gets "connection not allowed" / HTTP 403).',
        shown='`"direct"` if a route of that name exists, else the first route',
    )


def read_routes(
    data: Any,
    problems: Problems,
    base: Path | None = None,
    below: tuple[RouteConfig, ...] = (),
    before: bool = False,
) -> list[RouteConfig]:
    """The `[[route]]` tables. With routes `below` (the built-in config's), an entry with the
    name of one of them changes its keys and keeps its place; new ones go after them, or
    before them."""
    by_name = {r.name: r for r in below}
    data = _for_this_system(data)
    entries = read_array(RouteConfig, "route", data, problems, base, _named(by_name))
    if not entries and not below:
        problems.add(
            "route", 'at least one [[route]] is needed (e.g. name = "direct", chain = "direct")'
        )
    changed: dict[str, RouteConfig] = {}
    new: list[RouteConfig] = []
    for path, values, _ in entries:
        if not complete(RouteConfig, values):
            continue
        name = values["name"]
        if name == DENY:
            problems.add(f"{path}.name", "'deny' is reserved for [default] policy")
            continue
        if name.lower().startswith(FOUND_PREFIX):
            problems.add(
                f"{path}.name",
                f"names starting with '{FOUND_PREFIX}' are reserved for the routes a strategy "
                "search finds (to keep one, give it a name of your own)",
            )
            continue
        if name in changed or any(r.name == name for r in new):
            problems.add(f"{path}.name", f"route {name!r} is defined twice")
            continue
        if name in by_name:
            changed[name] = RouteConfig(**values)
        else:
            new.append(RouteConfig(**values))
    kept = [changed.get(r.name, r) for r in below]
    return new + kept if before else kept + new


def _for_this_system(data: Any) -> Any:
    """The data without the `[[route]]` tables that say `when = "linux"` elsewhere: their
    chains could not even be read here."""
    if sys.platform == "linux" or not isinstance(data, dict):
        return data
    tables = data.get("route")
    if not isinstance(tables, list):
        return data
    kept = [t for t in tables if not (isinstance(t, dict) and t.get("when") == LINUX)]
    return {**data, "route": kept}


def read_services(
    data: Any,
    route_names: list[str],
    problems: Problems,
    base: Path | None = None,
    below: tuple[Service, ...] = (),
) -> list[Service]:
    """The `[[service]]` tables. With services `below` (the built-in config's), an entry with
    the name of one of them changes its keys and keeps its place; new ones go first (a
    connection belongs to the first service that matches it)."""
    by_name = {s.name: s for s in below}
    changed: dict[str, Service] = {}
    new: list[Service] = []
    for path, values, _ in read_array(
        ServiceSettings, "service", data, problems, base, _named(by_name)
    ):
        check_service_routes(path, values["routes"], route_names, problems)
        if not complete(ServiceSettings, values):
            continue
        name = values["name"]
        if name in changed or any(s.name == name for s in new):
            problems.add(f"{path}.name", f"service {name!r} is defined twice")
            continue
        earlier = by_name.get(name)
        values["routes"] = expand_routes(values["routes"], earlier, route_names)
        service = make_service(values)
        if not service.domains and not service.cidrs:
            problems.add(path, f"service {name!r} needs domains or cidrs to match connections")
        if earlier is not None:
            changed[name] = service
        else:
            new.append(service)
    return new + [changed.get(s.name, s) for s in below]


def _named(by_name: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """The entry below with the name an entry gives (as written), if any."""

    def find(entry: dict[str, Any]) -> Any:
        name = entry.get("name")
        return by_name.get(name) if isinstance(name, str) else None

    return find


def check_service_routes(
    path: str, routes: tuple[str, ...], route_names: list[str], problems: Problems
) -> None:
    for i, route in enumerate(routes):
        if route == OTHER_ROUTES:
            if routes.index(route) != i:
                problems.add(f"{path}.routes[{i}]", f"{OTHER_ROUTES!r} may appear once")
        elif route not in route_names:
            problems.add(
                f"{path}.routes[{i}]",
                f"no route named {route!r} (routes: {', '.join(route_names) or 'none'})",
            )
        elif routes.index(route) != i:
            problems.add(f"{path}.routes[{i}]", f"route {route!r} is listed twice")


def expand_routes(
    routes: tuple[str, ...], earlier: Service | None, route_names: list[str]
) -> tuple[str, ...]:
    """A service's routes with `"..."` replaced by the routes it would have without the list
    (those the config below gave it, or else every route), less those the list names."""
    if OTHER_ROUTES not in routes:
        return routes
    others = (earlier.routes if earlier is not None else ()) or tuple(route_names)
    listed = set(routes)
    at = routes.index(OTHER_ROUTES)
    rest = tuple(r for r in others if r not in listed)
    return tuple(dict.fromkeys((*routes[:at], *rest, *routes[at + 1 :])))


def make_service(values: dict[str, Any]) -> Service:
    return Service(**{**values, "domains": tuple(dict.fromkeys(values["domains"]))})


def default_policy(
    written: str | None, route_names: list[str], problems: Problems, path: str = "default.policy"
) -> str:
    """The policy a file gave, checked against the routes; or, when none was given, `direct`
    if there is such a route, else the first route."""
    if written is None:
        return "direct" if "direct" in route_names else (route_names[0] if route_names else DENY)
    if written != DENY and written not in route_names:
        problems.add(
            path,
            f'no route named {written!r} (routes: {", ".join(route_names) or "none"}; or "deny")',
        )
    return written
