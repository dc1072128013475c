"""Keeping UDP health fresh while detour runs, apart from TCP health (monitor.py): a network
can pass a route's TCP and drop its UDP, and calls need to know which.

Every `[probe] interval` (jittered by 10%), and at start, each service with `udp_probes`
(STUN binding requests, UDP echoes: helper/probe/udp.py) is probed through each of its
enabled routes at once; the verdicts go into the router's UDP health book
(helper/routing/udp_health.py), which orders the routes of new UDP associations and is what
the status shows per service and route. Unlike TCP probes, these are not lazy: a call comes
unannounced, and the probes are a few datagrams per route.

The network watch (helper/probe/network.py) that tells the TCP monitor when the network is
back tells this monitor too: a round starts at once, so that no route keeps a verdict from
while the network was down until the next interval. While the watch says the network is
down, rounds are skipped: every datagram would go unanswered, and "dropped" verdicts would
put the routes whose UDP works last.

`route_views` and `view` are what the status shows of it (helper/status.py's UdpRouteView,
UdpProbesView).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..status import NetworkView, UdpProbesView, UdpRouteView

if TYPE_CHECKING:
    from ..probe.network import NetworkWatch
    from ..probe.udp import UdpProbeResult
    from ..services import Service
    from .router import Router

__all__ = ["UdpMonitor"]

log = logging.getLogger("detour.routing")


class UdpMonitor:
    def __init__(
        self,
        router: Callable[[], Router],
        *,
        interval: float,
        timeout: float = 3.0,
        network: NetworkWatch | None = None,
    ) -> None:
        """`router`: the router in use (it changes on a reload); `interval`: seconds between
        rounds ([probe] interval); `timeout`: each probe's (3 datagrams within it);
        `network`: the network watch (a round when the network is back, none while down)."""
        self._router = router
        self.interval = interval
        self.timeout = timeout
        self.network = network
        self.rounds = 0  # rounds finished (tests wait on it)
        self.skipped_offline = 0  # rounds skipped: the network was down
        self.network_back = 0  # rounds asked for: the network came back
        self.last_round_at: float | None = None
        self.running = False
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
            if self.network is not None:
                self.network.back_listeners.append(self._network_is_back)

    async def stop(self) -> None:
        if self.network is not None and self._network_is_back in self.network.back_listeners:
            self.network.back_listeners.remove(self._network_is_back)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def request(self) -> None:
        """Probe every service's UDP now (a reload, the network back)."""
        self._wake.set()

    def _network_is_back(self, state: NetworkView) -> None:
        if not self.services:
            return
        log.info("probing every service's UDP again: the network is back (%s)", state.reason)
        self.network_back += 1
        self.request()

    def _offline(self) -> bool:
        return self.network is not None and self.network.state.offline

    # --- status ---------------------------------------------------------------------------

    def view(self) -> UdpProbesView:
        return UdpProbesView(
            len(self.services),
            self.rounds,
            self.running,
            self.last_round_at,
            self.skipped_offline,
            self.network_back,
            self.interval,
        )

    def route_views(self) -> tuple[UdpRouteView, ...]:
        """Each route of the router in use: whether it carries UDP, and the latest UDP
        probe through it per service."""
        from transports.datagram import udp_refusal

        router = self._router()
        latest = router.udp_health.latest()
        views = []
        for route in router.routes:
            verdicts = {
                service: view for (service, name), view in latest.items() if name == route.name
            }
            views.append(
                UdpRouteView(route.name, udp_refusal(route.chain, off=not route.udp), verdicts)
            )
        return tuple(views)

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
            if services and self._offline():
                # The network watch re-probes when it is back (_network_is_back).
                log.info("UDP probes skipped: the network is down")
                self.skipped_offline += 1
            elif services:
                self.running = True
                try:
                    outcomes = await asyncio.gather(
                        *(self.probe_now(s) for s in services), return_exceptions=True
                    )
                finally:
                    self.running = False
                for service, outcome in zip(services, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        # A bug, not a network condition (those are verdicts): keep going.
                        log.error("probing %s's UDP failed: %r", service.name, outcome)
                self.last_round_at = time.time()
            self.rounds += 1
            self._done.set()
            await self._sleep()

    async def _sleep(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):  # not wait_for: see Monitor._loop
            async with asyncio.timeout(self.interval * random.uniform(0.9, 1.1)):
                await self._wake.wait()
