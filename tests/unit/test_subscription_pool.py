"""A subscription's pool in the router (helper/subscriptions/pool.py): its nodes ranked by
what the probes found (working and fastest first, unknown, failing), only the best `keep`
raced, the next-best taking a failing node's place at once; a pool without nodes leaves its
services on their other routes, and says so."""

from __future__ import annotations

from helper.config.subscription import pool_notes, with_pools
from helper.routing.health import HealthBook, RouteHealth
from helper.routing.router import Router
from helper.subscriptions.formats import parse_list
from helper.subscriptions.pool import (
    Pool,
    active_nodes,
    limit,
    pools_of,
    probe_due,
    rank,
    stale_active,
)

from .test_subscriptions import config

NODES = parse_list(
    b"\n".join(f"socks5://198.51.100.{i}:1080#N{i}".encode() for i in range(1, 6))
).nodes
NAMES = [f"panel.N{i}" for i in range(1, 6)]


def book(**cells: tuple[bool | None, float | None]) -> HealthBook:
    health = HealthBook()
    for node, (ok, latency) in cells.items():
        health.set("telegram", f"panel.{node}", RouteHealth(ok=ok, latency_ms=latency))
    return health


def test_ranked_working_fastest_first_then_unknown_then_failing() -> None:
    health = book(N1=(False, None), N2=(True, 300.0), N4=(True, 80.0), N5=(None, None))
    assert rank(health, "telegram", NAMES) == [
        "panel.N4", "panel.N2", "panel.N3", "panel.N5", "panel.N1",
    ]  # fmt: skip
    # Nothing known yet: the list's order.
    assert rank(HealthBook(), "telegram", NAMES) == NAMES
    pool = Pool("panel", tuple(NAMES), 2)
    assert active_nodes(pool, health, "telegram") == ["panel.N4", "panel.N2"]
    assert active_nodes(pool, health, "telegram", disabled={"panel.N4"}) == [
        "panel.N2",
        "panel.N3",
    ]


def test_close_times_keep_the_list_order() -> None:
    # 100 and 104 ms: one band, the list's order; 300 ms is slower whatever its place.
    health = book(N1=(True, 300.0), N2=(True, 104.0), N3=(True, 100.0))
    assert rank(health, "telegram", NAMES[:3]) == ["panel.N2", "panel.N3", "panel.N1"]


def test_limit_keeps_the_service_order_and_other_routes() -> None:
    pool = Pool("panel", tuple(NAMES), 2)
    health = book(N3=(True, 50.0), N5=(True, 40.0))
    names = ["direct", *NAMES, "tor"]
    assert limit([pool], health, "telegram", names) == ["direct", "panel.N5", "panel.N3", "tor"]
    # A node dies: the next-best is in at once.
    health.set("telegram", "panel.N5", RouteHealth(ok=False))
    assert limit([pool], health, "telegram", names) == ["direct", "panel.N3", "panel.N1", "tor"]
    # Another service has health of its own.
    assert limit([pool], health, "whatsapp", names) == ["direct", "panel.N1", "panel.N2", "tor"]


def test_the_router_races_only_the_active_few_and_probes_them_all() -> None:
    pooled = with_pools(config("keep = 2"), {"panel": NODES})
    assert [p.keep for p in pools_of(pooled)] == [2]
    router = Router.from_config(pooled)
    telegram = next(s for s in router.services if s.name == "telegram")
    raced = [r.name for r in router.candidates(telegram) if r.name.startswith("panel.")]
    assert raced == ["panel.N1", "panel.N2"]
    probed = [r.name for r in router.enabled_routes(telegram) if r.name.startswith("panel.")]
    assert probed == NAMES
    for node, ok, latency in (("N1", False, None), ("N4", True, 90.0), ("N5", True, 20.0)):
        router.health.set("telegram", f"panel.{node}", RouteHealth(ok=ok, latency_ms=latency))
    raced = [r.name for r in router.candidates(telegram) if r.name.startswith("panel.")]
    assert raced == ["panel.N5", "panel.N4"]
    assert router.active_route(telegram).name == "panel.N5"
    # A standby node can still be pinned (a person's choice).
    router.pin("telegram", "panel.N2")
    assert [r.name for r in router.candidates(telegram)] == ["panel.N2"]


def test_keep_defaults_to_three_and_must_be_positive() -> None:
    assert config().subscriptions[0].keep == 3
    import pytest

    from helper.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        config("keep = 0")
    assert "subscription[0].keep" in str(caught.value)


def test_a_pool_without_nodes_leaves_its_services_on_their_other_routes() -> None:
    only = config().pool_base or config()
    text_config = config()
    # `mine` names the pool and `direct`; a service naming only the pool falls to the
    # file's own routes, never to "every route" (other pools' nodes are not its).
    import dataclasses

    services = tuple(
        dataclasses.replace(s, routes=("panel",)) if s.name == "mine" else s
        for s in text_config.services
    )
    alone = dataclasses.replace(only, services=services)
    empty = with_pools(alone, {})
    mine = next(s for s in empty.services if s.name == "mine")
    assert mine.routes == tuple(r.name for r in only.routes)
    assert not any(name.startswith("panel.") for name in mine.routes)
    assert pool_notes(empty) == ["pool panel has no nodes: mine, telegram use their other routes"]
    assert pool_notes(with_pools(alone, {"panel": NODES})) == []


NOW = 1_000_000.0
MINUTE = 60.0


def verdict(health: HealthBook, node: str, ok: bool | None, latency: float | None, age: float,
           source: str = "probe") -> None:  # fmt: skip
    health.set(
        "telegram",
        f"panel.{node}",
        RouteHealth(ok=ok, latency_ms=latency, checked_at=NOW - age, source=source),
    )


def test_standby_nodes_are_probed_only_once_their_last_probe_is_old() -> None:
    pool = Pool("panel", tuple(NAMES), 2, standby_probe=30 * MINUTE)
    names = ["direct", *NAMES]
    # Nothing known yet (the first pass): every node is probed.
    assert probe_due([pool], HealthBook(), "telegram", names, NOW) == names
    health = HealthBook()
    verdict(health, "N1", True, 50.0, 5 * MINUTE)  # active
    verdict(health, "N2", True, 60.0, 5 * MINUTE)  # active
    verdict(health, "N3", True, 90.0, 10 * MINUTE)  # standby, probed recently
    verdict(health, "N4", False, None, 31 * MINUTE)  # standby, due
    verdict(health, "N5", True, 95.0, 29 * MINUTE)  # standby, not yet due
    due = probe_due([pool], health, "telegram", names, NOW)
    assert due == ["direct", "panel.N1", "panel.N2", "panel.N4"]
    # With half an interval's slack, N5 (29 minutes) is due on this pass, the one nearest
    # to its 30 minutes.
    assert "panel.N5" in probe_due([pool], health, "telegram", names, NOW, slack=2.5 * MINUTE)
    # A pinned standby node is probed every pass.
    assert "panel.N5" in probe_due([pool], health, "telegram", names, NOW, pinned="panel.N5")
    # A verdict that is not a probe's (three connections failed, a stall, remembered from a
    # previous run) is probed at once.
    for source in ("dial", "connection", "memory"):
        verdict(health, "N3", False, None, 0.0, source)
        assert "panel.N3" in probe_due([pool], health, "telegram", names, NOW)
    # standby_probe 0 (a Pool built without it): every node, every pass.
    assert probe_due([Pool("panel", tuple(NAMES), 2)], health, "telegram", names, NOW) == names
    # Another service has a ranking and verdicts of its own: nothing known, all due.
    assert probe_due([pool], health, "whatsapp", names, NOW) == names


def test_a_standby_node_moved_into_the_active_few_is_probed_when_its_verdict_is_stale() -> None:
    pool = Pool("panel", tuple(NAMES), 2, standby_probe=30 * MINUTE)
    interval = 5 * MINUTE
    health = HealthBook()
    verdict(health, "N1", True, 50.0, 0.0)
    verdict(health, "N2", True, 60.0, 0.0)
    verdict(health, "N3", True, 90.0, 20 * MINUTE)
    verdict(health, "N4", True, 95.0, 1 * MINUTE)
    verdict(health, "N5", False, None, 0.0)
    probed = {"panel.N1", "panel.N2"}  # the pass's probes: the active few
    assert stale_active([pool], health, "telegram", NAMES, NOW, interval, probed) == []
    # N1's time grows past N3's (old) one: N3 is active, but waits for the next pass.
    verdict(health, "N1", True, 200.0, 0.0)
    assert limit([pool], health, "telegram", NAMES) == ["panel.N2", "panel.N3"]
    assert stale_active([pool], health, "telegram", NAMES, NOW, interval, probed) == []
    # N1's probe fails: N3 is active at once (on its last verdict) ...
    verdict(health, "N1", False, None, 0.0)
    assert limit([pool], health, "telegram", NAMES) == ["panel.N2", "panel.N3"]
    # ... and, 20 minutes old, is probed at once.
    assert stale_active([pool], health, "telegram", NAMES, NOW, interval, probed) == ["panel.N3"]
    # N3 fails too: N4, probed a minute ago, takes its place on that verdict.
    verdict(health, "N3", False, None, 0.0)
    assert limit([pool], health, "telegram", NAMES) == ["panel.N2", "panel.N4"]
    assert stale_active([pool], health, "telegram", NAMES, NOW, interval, probed) == []
    # A node not yet known that becomes active is probed too.
    verdict(health, "N4", False, None, 0.0)
    health.set("telegram", "panel.N4", RouteHealth())
    assert stale_active([pool], health, "telegram", NAMES, NOW, interval, probed) == ["panel.N4"]


def test_the_pool_carries_standby_probe_from_the_config() -> None:
    assert [p.standby_probe for p in pools_of(with_pools(config(), {"panel": NODES}))] == [1800.0]
    pooled = with_pools(config('standby_probe = "2h"'), {"panel": NODES})
    assert [p.standby_probe for p in pools_of(pooled)] == [7200.0]
