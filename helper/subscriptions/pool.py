"""A subscription's pool in the running router: which of its nodes are active.

Every node of a pool is a route, and the probes go through all of them (a probe of a
service tries each of its routes), so each node is known to work or not, and how fast, for
each service. Only the best `keep` of them are *active*: the candidates a connection races.
The others wait. In a service's list of routes, the active few stand where the pool's nodes
stood, best first. The ranking is done again on every look (sans-IO, from the health book),
so a node that stops working (its probe fails, or connections through it keep failing) is
out of the active few at once and the next-best node is in.

Ranked: working nodes first, fastest first (the probe's latency, in bands 25% wide: nodes
whose times are close keep the list's order, so the noise of one probe does not swap them
back and forth); then nodes not yet known, in the list's order; then failing ones. A node
the user disabled is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Pool", "active_nodes", "limit", "pools_of", "rank"]

BAND = 1.25  # latencies within this factor of each other rank alike


@dataclass(frozen=True)
class Pool:
    name: str
    routes: tuple[str, ...]  # its nodes' route names, in the list's order
    keep: int

    def __contains__(self, route: object) -> bool:
        return route in self.routes


def pools_of(config: Any) -> tuple[Pool, ...]:
    """The pools of a Config (its subscriptions, their nodes' routes)."""
    pools = []
    for subscription in getattr(config, "subscriptions", ()):
        prefix = f"{subscription.name}."
        routes = tuple(r.name for r in config.routes if r.name.startswith(prefix))
        pools.append(Pool(subscription.name, routes, subscription.keep))
    return tuple(pools)


def rank(health: Any, service: str, routes: Sequence[str]) -> list[str]:
    """`routes` best first for `service`: working (fastest first), unknown, failing."""

    def key(item: tuple[int, str]) -> tuple[int, float, int]:
        index, name = item
        known = health.get(service, name)
        if known.ok:
            latency = known.latency_ms
            band = math.floor(math.log(max(latency, 1.0), BAND)) if latency else math.inf
            return (0, band, index)
        return (1 if known.ok is None else 2, 0.0, index)

    return [name for _, name in sorted(enumerate(routes), key=key)]


def active_nodes(
    pool: Pool, health: Any, service: str, disabled: Collection[str] = ()
) -> list[str]:
    """The pool's active nodes for `service`, best first."""
    usable = [name for name in pool.routes if name not in disabled]
    return rank(health, service, usable)[: pool.keep]


def limit(pools: Iterable[Pool], health: Any, service: str, names: Sequence[str]) -> list[str]:
    """`names` (a service's routes, in its order) with each pool's nodes cut to its active
    few, best first, in the places the pool's nodes had."""
    ranked: dict[str, list[str]] = {}  # a pool's first node -> its active few, best first
    standby: set[str] = set()
    for pool in pools:
        mine = [n for n in names if n in pool]
        if mine:
            best = rank(health, service, mine)[: pool.keep]
            ranked[mine[0]] = best
            standby.update(mine)
    if not standby:
        return list(names)
    out: list[str] = []
    for name in names:
        if name in ranked:
            out += ranked[name]
        elif name not in standby:
            out.append(name)
    return out
