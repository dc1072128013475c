"""Keeping UDP health fresh while detour runs, apart from TCP health (monitor.py): a network
can pass a route's TCP and drop its UDP, and calls need to know which.

Every `[probe] interval` (jittered by 10%), and at start, each service with `udp_probes`
(STUN binding requests, UDP echoes: helper/probe/udp.py) is probed through each of its
enabled routes at once; the verdicts go into the router's UDP health book
(helper/routing/udp_health.py), which orders the routes of new UDP associations and is what
the status shows per service and route. Unlike TCP probes, these are not lazy: a call comes
unannounced, and the probes are a few datagrams per route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..probe.udp import UdpProbeResult
    from ..services import Service
    from .router import Router

__all__ = ["UdpMonitor"]

log = logging.getLogger("detour.routing")


class UdpMonitor:
    def __init__(
        self, router: Callable[[], Router], *, interval: float, timeout: float = 3.0
    ) -> None:
        """`router`: the router in use (it changes on a reload); `interval`: seconds between
        rounds ([probe] interval); `timeout`: each probe's (3 datagrams within it)."""
        self._router = router
        self.interval = interval
        self.timeout = timeout
        self.rounds = 0  # rounds finished (tests wait on it)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def services(self) -> list[Service]:
        return [s for s in self._router().services if s.udp_probes]

    def start(self, probe_now: bool = True) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(probe_now), name="detour-udp-monitor"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def request(self) -> None:
        """Probe every service's UDP now (a reload, the network back)."""
        self._wake.set()

    async def wait_round(self, after: int) -> None:
        """Until more than `after` rounds have finished."""
        while self.rounds <= after:
            self._done.clear()
            await self._done.wait()

    async def probe_now(self, service: Service) -> list[UdpProbeResult]:
        """Probe `service`'s UDP through its enabled routes; the verdicts go into UDP health."""
        from ..probe.udp import probe_udp_routes

        router = self._router()
        results = await probe_udp_routes(
            service, router.enabled_routes(service), router.udp_health, self.timeout
        )
        from ..probe.udp import udp_verdict

        for result in results:
            log.info(
                "%s UDP via %s: %s",
                service.name,
                result.route,
                "works" if result.ok else f"{result.diagnosis} ({result.detail})",
            )
        diagnosis, detail = udp_verdict(results)
        log.info("%s UDP: %s: %s", service.name, diagnosis, detail)
        return results

    async def _loop(self, probe_now: bool) -> None:
        if not probe_now:
            await self._sleep()
        while True:
            services = self.services
            if services:
                outcomes = await asyncio.gather(
                    *(self.probe_now(s) for s in services), return_exceptions=True
                )
                for service, outcome in zip(services, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        # A bug, not a network condition (those are verdicts): keep going.
                        log.error("probing %s's UDP failed: %r", service.name, outcome)
            self.rounds += 1
            self._done.set()
            await self._sleep()

    async def _sleep(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.interval * random.uniform(0.9, 1.1))
