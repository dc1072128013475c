"""Health kept fresh while detour runs, against the lab: the preferred route comes back
within one probe interval once it works again, a restart on the same network starts with
what worked there, and everything shows up in the event stream."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.events import ConnectionClosed, ConnectionOpened, ProbeFinished, RouteChanged
from helper.lab.lab import Lab
from helper.routing.state import HealthStore
from tests.support.clients import open_socks5

pytestmark = pytest.mark.asyncio(loop_scope="module")


def lab_config(lab: Lab, interval: float = 300.0) -> Config:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    routes = tuple(config.route(name) for name in ("direct", "tls-fragment"))
    services = tuple(
        dataclasses.replace(s, routes=("direct", "tls-fragment")) for s in config.services
    )
    return dataclasses.replace(
        config,
        routes=routes,
        services=services,
        probe=dataclasses.replace(config.probe, interval=interval),
    )


async def wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def active(engine: Engine, service: str) -> str | None:
    route = engine.router.active_route(next(s for s in engine.router.services if s.name == service))
    return route.name if route else None


async def test_the_preferred_route_comes_back_within_one_interval(lab: Lab) -> None:
    await lab.set_scenario("sni-reset")
    engine = Engine(lab_config(lab, interval=2.0))
    events = engine.events.subscribe()
    await engine.start()
    try:
        await wait_for(lambda: active(engine, "signal") == "tls-fragment", 15)
        engine.monitor.service_used(next(s for s in engine.router.services if s.name == "signal"))
        await lab.set_scenario("baseline")  # the block is lifted
        took = await wait_for(lambda: active(engine, "signal") == "direct", 15)
        assert took < 2.0 * 1.1 + 5  # one (jittered) interval plus one probe
    finally:
        await engine.stop()
    changes = [e for e in iter(events.get_nowait, None) if isinstance(e, RouteChanged)]
    signal = [(e.old, e.new) for e in changes if e.service == "signal"]
    assert ("tls-fragment", "direct") in signal


async def test_unused_services_are_not_reprobed(lab: Lab) -> None:
    await lab.set_scenario("baseline")
    engine = Engine(lab_config(lab, interval=1.0))
    events = engine.events.subscribe()
    await engine.start()
    try:
        await asyncio.sleep(3.5)  # the start-up probe, then three intervals
    finally:
        await engine.stop()
    finished = [e for e in iter(events.get_nowait, None) if isinstance(e, ProbeFinished)]
    per_service = {
        s: sum(1 for e in finished if e.result.service == s) for s in ("telegram", "signal")
    }
    assert per_service == {"telegram": 2, "signal": 2}  # one round each (two routes): at start


async def test_a_restart_remembers_this_network_only(lab: Lab, tmp_path: Path) -> None:
    await lab.set_scenario("sni-reset")
    store = HealthStore(tmp_path)
    first = Engine(lab_config(lab), store=store, network="home")
    await first.start()
    try:
        await wait_for(lambda: active(first, "telegram") == "tls-fragment", 15)
    finally:
        await first.stop()

    again = Engine(lab_config(lab), store=store, network="home", probe_on_start=False)
    await again.start()
    assert active(again, "telegram") == "tls-fragment"  # before any probe
    assert again.router.health.get("telegram", "tls-fragment").source == "memory"
    await again.stop()

    elsewhere = Engine(lab_config(lab), store=store, network="cafe", probe_on_start=False)
    await elsewhere.start()
    assert active(elsewhere, "telegram") is None
    await elsewhere.stop()


async def test_connections_are_in_the_event_stream(lab: Lab) -> None:
    await lab.set_scenario("baseline")
    engine = Engine(lab_config(lab), probe_on_start=False)
    events = engine.events.subscribe()
    async with engine:
        reader, writer = await open_socks5(
            engine.mixed_address, lab.table.address("telegram-dc2"), 80
        )
        writer.write(
            b"POST / HTTP/1.1\r\nHost: dc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await reader.read()
        writer.close()
        await wait_for(lambda: not engine.server.connections, 5)
    seen = list(iter(events.get_nowait, None))
    opened = next(e for e in seen if isinstance(e, ConnectionOpened))
    closed = next(e for e in seen if isinstance(e, ConnectionClosed))
    assert (opened.service, opened.route) == ("telegram", "direct")
    assert opened.id == closed.id
    assert closed.up > 0 and closed.down > 0
