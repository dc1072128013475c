"""Standby nodes on a slower schedule (docs/subscriptions.md "Ranked, and the best few
active"): a pool of real SOCKS5 nodes (microsocks) served by a local subscription; after the
first pass (every node) only the active node is probed each pass, the standby ones not; when
the active node dies a standby one takes its place within one probe interval and, its
verdict being older than an interval, is probed at once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support import peers
from tests.support.waiting import until

from .test_subscriptions import INTERVAL, active, config, echo, list_server, node_list, pool_routes

__all__ = ["list_server"]  # the fixture, used by name


@pytest.mark.slow  # about 6 s: four nodes, four passes, a failover
async def test_standby_nodes_are_probed_less_often_and_a_failover_is_still_quick(
    start_engine, list_server, echo_origin
) -> None:
    server, port, ca = list_server
    with (
        peers.microsocks() as one,
        peers.microsocks() as two,
        peers.microsocks() as three,
        peers.microsocks() as four,
    ):
        nodes = {"one": one, "two": two, "three": three, "four": four}
        server.body = node_list(*((name, p.port, "") for name, p in nodes.items()))
        extra = 'keep = 1\nstandby_probe = "1h"'
        text = config(port, ca, echo_origin.port, extra)
        text = text.replace(f'interval = "{INTERVAL}s"', f'interval = "{INTERVAL / 2}s"')
        assert f'interval = "{INTERVAL / 2}s"' in text
        engine = await start_engine(text)
        await until(lambda: len(pool_routes(engine)) == 4)
        monitor = engine.monitor  # the pool's arrival started a new one (a reload)
        monitor.lazy = False  # every interval, used or not
        health = engine.router.health
        # The first pass probes every node: a ranking exists.
        await until(lambda: all(health.get("local", n).ok for n in pool_routes(engine)))

        probes: Counter[str] = Counter()
        passes = [0]
        probe, run = monitor.prober.probe, monitor._probe

        async def counting_probe(service, route, **kwargs):
            probes[route.name] += 1
            return await probe(service, route, **kwargs)

        async def counting_pass(service, full=False):
            passes[0] += 1
            await run(service, full)

        monitor.prober.probe = counting_probe
        monitor._probe = counting_pass
        await until(lambda: passes[0] >= 4, timeout=INTERVAL * 4 + 30)
        # Each pass probes the active node; a standby node only when it has moved into the
        # active place (close times may swap them), never all four each pass (4 per pass).
        done = passes[0]
        assert sum(probes.values()) <= 2 * done + 1, (probes, done)

        # The active node dies: within one interval (and the probes' time) another takes its
        # place, confirmed by a probe since (its verdict was older than an interval).
        first = active(engine)
        await echo(engine, echo_origin.port)
        dead = nodes[first.removeprefix("pool.")]
        killed = time.time()
        dead.process.kill()
        dead.process.wait()

        def replaced() -> bool:
            now = active(engine)
            return now not in (None, first) and health.get("local", now).checked_at >= killed

        await until(replaced, timeout=INTERVAL + 15)
        await echo(engine, echo_origin.port)
