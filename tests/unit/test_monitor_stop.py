"""Stopping the probe monitors while they are woken: Python 3.11's `asyncio.wait_for`
returns the result when the awaited event is set in the same turn its task is cancelled,
so a monitor loop built on it went on for ever and `stop()` -- which a reload (SIGHUP) and
a shutdown await -- never returned. No sockets: the routers are stand-ins."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from helper.routing.monitor import HealthMonitor
from helper.routing.udp_health import UdpHealth
from helper.routing.udp_monitor import UdpMonitor


def _router() -> SimpleNamespace:
    return SimpleNamespace(
        services=[],
        routes=[],
        enabled_routes=lambda service: [],
        udp_health=UdpHealth(),
        observe=lambda observer: None,
        unobserve=lambda observer: None,
    )


async def test_the_health_monitor_stops_when_woken_as_it_is_cancelled() -> None:
    monitor = HealthMonitor(_router(), SimpleNamespace(), interval=3600)  # type: ignore[arg-type]
    await monitor.start(probe_now=False)
    await asyncio.sleep(0.05)  # the loop waits for its wake-up
    monitor._wake.set()  # a request arrives ...
    await asyncio.wait_for(monitor.stop(), 5)  # ... in the turn the stop cancels the loop
    assert monitor._loop_task is not None and monitor._loop_task.done()


async def test_the_udp_monitor_stops_when_woken_as_it_is_cancelled() -> None:
    router = _router()
    monitor = UdpMonitor(lambda: router, interval=3600)
    monitor.start(probe_now=False)
    await asyncio.sleep(0.05)
    monitor.request()
    await asyncio.wait_for(monitor.stop(), 5)
