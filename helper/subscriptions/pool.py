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

Probed on two schedules (`probe_due`, `stale_active`): the active few, nodes not yet known
by a probe, a pinned one and routes outside pools on every probe pass; a standby node only
on the pass nearest to the time its last probe is `standby_probe` old. When a pass moves a
standby node into the active few (an active one failed) and its verdict is older than a
probe interval, it is probed at once, in the same pass.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Pool", "active_nodes", "limit", "pools_of", "probe_due", "rank", "stale_active"]

BAND = 1.25  # latencies within this factor of each other rank alike


@dataclass(frozen=True)
class Pool:
    name: str
    routes: tuple[str, ...]  # its nodes' route names, in the list's order
    keep: int
    standby_probe: float = 0.0  # seconds between probes of a standby node (0: every pass)

    def __contains__(self, route: object) -> bool:
        return route in self.routes


def pools_of(config: Any) -> tuple[Pool, ...]:
    """The pools of a Config (its subscriptions, their nodes' routes)."""
    pools = []
    for subscription in getattr(config, "subscriptions", ()):
        prefix = f"{subscription.name}."
        routes = tuple(r.name for r in config.routes if r.name.startswith(prefix))
        pools.append(
            Pool(
                subscription.name,
                routes,
                subscription.keep,
                getattr(subscription, "standby_probe", 0.0),
            )
        )
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


def _active_sets(
    pools: Iterable[Pool], health: Any, service: str, names: Sequence[str]
) -> Iterator[tuple[Pool, list[str], set[str]]]:
    """(pool, its nodes among `names`, its active few) for each pool `names` uses."""
    for pool in pools:
        mine = [n for n in names if n in pool]
        if mine:
            yield pool, mine, set(rank(health, service, mine)[: pool.keep])


def _probed_within(health: Any, service: str, name: str, age: float, now: float) -> bool:
    """The node's verdict is a probe's (not a dial's, a stall's or a remembered one) and
    younger than `age` seconds."""
    known = health.get(service, name)
    return known.ok is not None and known.source == "probe" and now - known.checked_at < age


def probe_due(
    pools: Iterable[Pool],
    health: Any,
    service: str,
    names: Sequence[str],
    now: float,
    pinned: str | None = None,
    slack: float = 0.0,
) -> list[str]:
    """`names` (the routes a probe pass of `service` would go through, in order) less the
    standby nodes not due: those whose last probe is younger than their pool's
    `standby_probe` less `slack` (half a probe interval: a node is probed on the pass
    nearest to the time it is due, not on the first after it). Active nodes, a pinned one,
    nodes whose verdict is not a probe's (not known, a dial's, a stall's, remembered from a
    previous run) and routes outside pools are always due. `now` is wall-clock time
    (RouteHealth.checked_at)."""
    skip: set[str] = set()
    for pool, mine, active in _active_sets(pools, health, service, names):
        if pool.standby_probe <= 0:
            continue
        for name in mine:
            if name in active or name == pinned:
                continue
            if _probed_within(health, service, name, pool.standby_probe - slack, now):
                skip.add(name)
    return [name for name in names if name not in skip]


def stale_active(
    pools: Iterable[Pool],
    health: Any,
    service: str,
    names: Sequence[str],
    now: float,
    fresh: float,
    probed: Collection[str],
) -> list[str]:
    """After a pass that probed `probed`: in each pool where one of them failed, the active
    nodes among `names` whose verdict is older than `fresh` seconds (or not a probe's). The
    standby node that took a failed node's place is used at once on its last verdict, and
    probed at once when that is stale. (One that moved up only because the active node's
    time grew waits for the next pass: the ranking's noise costs no extra probes.)"""
    stale = []
    for _pool, mine, active in _active_sets(pools, health, service, names):
        if not any(n in probed and health.get(service, n).ok is False for n in mine):
            continue
        stale += [
            n for n in mine if n in active and not _probed_within(health, service, n, fresh, now)
        ]
    return stale
