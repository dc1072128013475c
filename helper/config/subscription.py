"""`[[subscription]]` (docs/subscriptions.md): where a list of servers is served and what
its nodes serve; and the pool: the list's nodes as routes of a Config (`with_pools`, pure
given the lists).

A node's route is named `SUBSCRIPTION.NODE` (NODE from the node's own name, so it stays
the same across refreshes, and `nodes` overrides written for it keep applying). The pool's
routes go after the file's routes; the services in `services` try them first, a service
that names the subscription in its `routes` gets them there, and every other service does
not use them (a service without `routes` keeps the file's routes only)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from transports import parse_chain

from .routes import RouteConfig
from .schema import Problems, complete, read_array, setting
from .values import count, entry_name, flag, parse_duration, string

# A node of a list (helper/subscriptions/formats.Node: .slug, .chain), and the Config: not
# imported, so that the config package does not depend on the subscriptions one.
Node = Any
Config = Any

__all__ = [
    "NodeOverride",
    "SubscriptionConfig",
    "hide_url",
    "pool_notes",
    "pool_routes",
    "read_subscriptions",
    "with_pools",
]

MAX_ROUTE_NAME = 64


def subscription_url(value: Any) -> str:
    text = string(value).strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("not a valid URL (https://HOST/PATH)") from None
    if parts.scheme == "https" and not parts.hostname:
        raise ValueError("the URL names no host (https://HOST/PATH)")
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(
            "a subscription is fetched over https:// (over http:// anyone on the way could "
            "read the servers and change the list)"
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise ValueError("the URL holds spaces or control characters")
    return text


def hide_url(text: str) -> str:
    """The URL with its path and query hidden (they are its secret)."""
    try:
        netloc = urlsplit(text).netloc.rpartition("@")[2]
    except ValueError:
        return "https://***"
    return f"https://{netloc}/***"


@dataclass(frozen=True)
class NodeOverride:
    node: str  # the node's name (NODE of SUBSCRIPTION.NODE)
    enabled: bool = True
    timeout: float | None = None


def node_overrides(value: Any) -> tuple[NodeOverride, ...]:
    if not isinstance(value, dict):
        raise ValueError('expected a table: { "NODE" = { enabled = false, timeout = "5s" } }')
    out = []
    for node, settings in value.items():
        if not isinstance(settings, dict):
            raise ValueError(f"{node!r}: expected a table (enabled, timeout)")
        unknown = set(settings) - {"enabled", "timeout"}
        if unknown:
            raise ValueError(f"{node!r}: unknown key {sorted(unknown)[0]!r} (enabled, timeout)")
        try:
            enabled = flag(settings.get("enabled", True))
            timeout = parse_duration(settings["timeout"]) if "timeout" in settings else None
        except ValueError as exc:
            raise ValueError(f"{node!r}: {exc}") from None
        out.append(NodeOverride(str(node), enabled, timeout))
    return tuple(out)


@dataclass(frozen=True)
class SubscriptionConfig:
    name: str = setting(
        convert=entry_name,
        doc="The pool's name: its nodes are routes named `NAME.NODE`, and a service's "
        "`routes` may name the pool. The same characters as route names; unique.",
    )
    url: str = setting(
        convert=subscription_url,
        secret=True,
        doc="Where the list is served, `https://` only (its path is a secret and is never "
        "shown). Base64 or plain lines of links, SIP008 JSON or Outline's JSON "
        "([subscriptions.md](subscriptions.md)).",
    )
    refresh: float = setting(
        "6h", parse_duration, "How often the list is fetched again; a failed fetch keeps "
        "the last good list and is tried again after a tenth of this."
    )  # fmt: skip
    services: tuple[str, ...] = setting(
        [],
        each=string,
        doc="Services that try the pool's routes first (before their own). Other services "
        "use the pool only where their `routes` name it.",
    )
    via: tuple[str, ...] = setting(
        [],
        each=string,
        doc="Routes to fetch the list through, in order, until one works.",
        shown="every route that is not a subscription's, in order",
    )
    allow_private: bool = setting(
        False,
        flag,
        "`true`: nodes whose address is private, loopback or link-local are used; by default "
        "they are refused (a list from elsewhere must not point detour at your own network).",
    )
    keep: int = setting(
        3,
        count,
        "How many of the pool's nodes are active: the best this many (working, fastest "
        "first, as the probes rank them) are the ones connections race; the others are "
        "probed and wait to take a failing node's place.",
    )
    standby_probe: float = setting(
        "30m",
        parse_duration,
        "How often a standby node (one not among the `keep` active) is probed: on the "
        "probe pass nearest to the time its last probe is this old. Active nodes, pinned "
        "ones and nodes not yet known are probed every `[probe] interval`; a standby node "
        "that takes a failing node's place is probed at once when its verdict is older than that. "
        "`[probe] interval` or less: every node on every pass.",
    )
    nodes: tuple[NodeOverride, ...] = setting(
        {},
        node_overrides,
        'Per-node settings that survive refreshes: `{ "NODE" = { enabled = false, timeout = '
        '"5s" } }`, NODE as in the route name `NAME.NODE`.',
        shown="none",
    )


def read_subscriptions(
    data: Any,
    problems: Problems,
    route_names: list[str],
    service_names: list[str],
    base: Path | None = None,
) -> list[SubscriptionConfig]:
    out: list[SubscriptionConfig] = []
    for path, values, _ in read_array(SubscriptionConfig, "subscription", data, problems, base):
        if not complete(SubscriptionConfig, values):
            continue
        name = values["name"]
        if any(s.name == name for s in out) or name in route_names:
            problems.add(f"{path}.name", f"{name!r} is a route or subscription already")
            continue
        taken = [r for r in route_names if r.startswith(f"{name}.")]
        if taken:
            problems.add(
                f"{path}.name",
                f"route {taken[0]!r}: names starting with '{name}.' are the subscription's",
            )
        for i, service in enumerate(values["services"]):
            if service not in service_names:
                problems.add(
                    f"{path}.services[{i}]",
                    f"no service named {service!r} (services: {', '.join(service_names)})",
                )
        for i, route in enumerate(values["via"]):
            if route not in route_names:
                problems.add(f"{path}.via[{i}]", f"no route named {route!r}")
        out.append(SubscriptionConfig(**values))
    return out


def route_name(subscription: str, node: str) -> str:
    return f"{subscription}.{node}"[:MAX_ROUTE_NAME]


def pool_routes(subscription: SubscriptionConfig, nodes: tuple[Node, ...]) -> list[RouteConfig]:
    """The nodes as routes, with the overrides applied (a disabled node is left out)."""
    from ..subscriptions.formats import private_node

    overrides = {o.node: o for o in subscription.nodes}
    routes = []
    for node in nodes:
        override = overrides.get(node.slug, NodeOverride(node.slug))
        if not override.enabled:
            continue
        if not subscription.allow_private and private_node(node.chain):
            continue  # a list stored while they were allowed
        route = RouteConfig(route_name(subscription.name, node.slug), parse_chain(node.chain))
        if override.timeout is not None:
            route = dataclasses.replace(route, timeout=override.timeout)
        routes.append(route)
    return routes


Lists = Callable[[str], "tuple[Any, ...] | None"]


def with_pools(config: Config, lists: Lists | Mapping[str, tuple[Node, ...]]) -> Config:
    """`config` with each subscription's nodes (from `lists`: the last good list of each,
    None when there is none) as routes, and in the services that use them. Applied to a
    config that has pools already, it starts again from the config without them."""
    base = config.pool_base or config
    if not base.subscriptions:
        return config
    get = lists.get if isinstance(lists, Mapping) else lists
    pools: dict[str, list[str]] = {}
    routes = list(base.routes)
    for subscription in base.subscriptions:
        found = pool_routes(subscription, get(subscription.name) or ())
        routes += found
        pools[subscription.name] = [r.name for r in found]
    own = [r.name for r in base.routes]
    services = []
    for service in base.services:
        names = list(service.routes) or own
        expanded: list[str] = []
        for name in names:
            expanded += pools.get(name, [name])
        first = [
            route
            for subscription in base.subscriptions
            if service.name in subscription.services
            for route in pools[subscription.name]
        ]
        ordered = tuple(dict.fromkeys([*first, *expanded]))
        if not ordered and service.routes:
            # Every route it names is a pool without nodes: its other routes are the file's
            # own (not every route: other pools are not its). pool_notes() says so.
            ordered = tuple(own)
        services.append(dataclasses.replace(service, routes=ordered))
    return dataclasses.replace(base, routes=tuple(routes), services=tuple(services), pool_base=base)


def pool_notes(config: Config) -> list[str]:
    """One line per pool without nodes (no list yet, or every node disabled or refused),
    naming the services it leaves on their other routes."""
    notes = []
    for subscription in config.subscriptions:
        if any(r.name.startswith(f"{subscription.name}.") for r in config.routes):
            continue
        base = config.pool_base or config
        users = [
            s.name
            for s in base.services
            if s.name in subscription.services or subscription.name in s.routes
        ]
        using = f": {', '.join(users)} use their other routes" if users else ""
        notes.append(f"pool {subscription.name} has no nodes{using}")
    return notes


def subscription_names(data: Any) -> list[str]:
    """The names the file's `[[subscription]]` tables give (read before the services, which
    may name a pool; the tables themselves are checked by read_subscriptions)."""
    if not isinstance(data, list):
        return []
    return [t["name"] for t in data if isinstance(t, dict) and isinstance(t.get("name"), str)]


def stored_nodes(name: str) -> tuple[Any, ...] | None:
    """A subscription's last good list, from the state directory (helper/subscriptions)."""
    from ..subscriptions.store import load

    stored = load(name)
    return stored.nodes if stored is not None else None
