"""Keeping route health fresh while detour runs.

- At start: what worked on this network last time (the state file), then a probe of every
  service, in the background.
- Every `[probe] interval` (jittered by 10%, so many detours do not probe in step): a
  re-probe of each service that clients used since the last one ("lazy": an idle service
  costs no traffic). A subscription's standby nodes are left out of a pass until their
  `standby_probe` is due (subscriptions/pool.py, probe_due).
- At once, when a route keeps failing client connections.

Each probe result updates the health book, which orders routes for new connections: when a
preferred route recovers, new connections go back to it; connections in progress are never
moved or cut.

The monitor is the router's observer (RouterObserver): the router tells it which services
clients use and which route keeps failing. It keeps what a status view shows of the probes:
the latest result per cell, which probes run, how far a round has got, and how long each
took (the Tally's histogram).

Each route's verdict is recorded as soon as it is known, except one that got no answer at
all: that is held until the service's pass ends. When no route of the service got an
answer, the network watch (`watch`, helper/probe/network.py) says whether the network is
down; then the results say "offline" instead of naming censorship, route health is left as
it was (nothing was learnt about the routes), no search starts (`on_probed`), and every
service is probed again as soon as the network is back. A missing route out (the route
lookup, which sends nothing) shows "offline" at once, before the pass ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..probe.network import NetworkView, NetworkWatch, answered, offline_result
from ..probe.probe import Prober, turns, wait_turn
from ..probe.result import ProbeResult
from ..services import Service
from ..status import ProbeRound, ProbeTally, Tally
from ..subscriptions.pool import probe_due, stale_active
from .health import RouteHealth
from .route import Route
from .router import Router
from .state import HealthStore

__all__ = ["HealthMonitor"]

log = logging.getLogger("detour.routing")

TICK = 1.0


@dataclass
class _Pass:
    """One probe pass over a service's routes: the results that got no answer at all, held
    until the pass shows whether the network is down."""

    results: list[ProbeResult] = field(default_factory=list)
    answered: bool = False  # some route got an answer: nothing more is held
    looked_up: bool = False  # the route lookup ran in this pass


class HealthMonitor:
    def __init__(
        self,
        router: Router,
        prober: Prober,
        *,
        interval: float,
        store: HealthStore | None = None,
        network: str = "",
        lazy: bool = True,
        tally: Tally | None = None,
        network_watch: NetworkWatch | None = None,
    ) -> None:
        self.router = router
        self.watch = network_watch
        self.tally = tally
        self.prober = prober
        self.interval = interval
        self.store = store
        self.network = network
        self.lazy = lazy
        # The latest probe of each (service, route), steps and all: what a UI shows in detail.
        self.results: dict[tuple[str, str], ProbeResult] = {}
        self.probing: set[str] = set()  # services being probed right now
        self.progress = ProbeTally()  # the cells being probed, and the round's count
        self._used: dict[str, float] = {}  # service -> when a client last used it
        self._next: dict[str, float] = {}  # service -> when its next periodic probe is due
        self._requested: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._early: set[tuple[str, str]] = set()  # (service, route): early verdicts in use
        # Told about each service's results once they are in the health book (the engine
        # starts strategy searches from here).
        self.on_probed: Callable[[Service, list[ProbeResult]], None] | None = None
        router.observe(self)

    @property
    def services(self) -> list[Service]:
        return [s for s in self.router.services if s.probes]

    async def start(self, probe_now: bool = True) -> None:
        if self.store is not None:
            known = self.store.load(self.network, self.router.health)
            if known:
                log.info("remembered %d route results from this network", known)
                self.router.note_health_change("remembered from the last run on this network")
        now = time.monotonic()
        for service in self.services:
            if probe_now:
                self._requested.add(service.name)
            self._next[service.name] = now + self._jittered()
        if probe_now:
            # The first pass starts at once, not a tick later: on a network detour has not
            # seen, the time to a working route counts from here.
            self._wake.set()
        self._loop_task = asyncio.ensure_future(self._loop())
        if self.watch is not None:
            self.watch.on_back = self._network_back

    async def stop(self) -> None:
        if self.watch is not None and self.watch.on_back == self._network_back:
            self.watch.on_back = None
        tasks = [t for t in (self._loop_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self.router.unobserve(self)
        for service, route in self._early:
            # Its pass was cut short before the full verdict: nothing known, nothing kept.
            self.router.health.set(service, route, RouteHealth())
        self._early.clear()
        self._save()

    # --- what the router tells (RouterObserver) -------------------------------------------

    def service_used(self, service: Service) -> None:
        self._used[service.name] = time.monotonic()

    def route_failing(self, service: Service | None, route: str) -> None:
        if service is not None and service.probes:
            log.info("%s via %s keeps failing: probing %s again", service.name, route, service.name)
            self.request(service)

    # --- status ---------------------------------------------------------------------------

    def probe_status(self) -> tuple[Mapping[tuple[str, str], ProbeResult], ProbeRound]:
        """The latest result per (service, route), and the probes running now."""
        return dict(self.results), self.progress.freeze()

    def _network_back(self, state: NetworkView) -> None:
        log.info("probing every service again: the network is back (%s)", state.reason)
        for service in self.services:
            self.request(service)

    def request(self, service: Service) -> None:
        """Re-probe `service` now (a user asked, or its route keeps failing)."""
        self._requested.add(service.name)
        self._wake.set()

    async def probe_now(self, service: Service) -> None:
        """Probe `service` and wait for the result (used by the UI and tests)."""
        await self._probe(service, full=True)

    def _jittered(self) -> float:
        return self.interval * random.uniform(0.9, 1.1)

    def probe_routes(self, service: Service) -> list[Route]:
        """The routes a probe of `service` goes through: its routes (and those a search found
        for it), less disabled ones."""
        return self.router.enabled_routes(service)

    async def _loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result when
            # the event is set in the turn the task is cancelled, and the loop (and stop(),
            # and a reload or shutdown waiting on it) would go on for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            for service in self.services:
                name = service.name
                if name in self._running:
                    continue
                periodic = now >= self._next[name] and (
                    not self.lazy or self._used.get(name, -1.0) >= now - 2 * self.interval
                )
                if name in self._requested or periodic:
                    self._requested.discard(name)
                    self._next[name] = now + self._jittered()
                    task = asyncio.ensure_future(self._probe(service))
                    self._running[name] = task
                    task.add_done_callback(lambda _t, n=name: self._running.pop(n, None))

    async def _probe(self, service: Service, full: bool = False) -> None:
        """A probe pass of `service`: its routes less the pools' standby nodes not due
        (`full`: every route); then, at once, any node a failure moved into a pool's active
        few whose verdict is older than an interval (subscriptions/pool.py)."""
        routes = self.probe_routes(service)
        router = self.router
        if not full:
            pin = router.pins.get(service.name)
            due = probe_due(
                router.pools, router.health, service.name, _names(routes), time.time(), pin,
                self.interval / 2,
            )  # fmt: skip
            routes = [r for r in routes if r.name in due]
        done: set[str] = set()
        while routes and await self._pass(service, routes):
            done.update(_names(routes))
            again = stale_active(
                router.pools, router.health, service.name, _names(self.probe_routes(service)),
                time.time(), self.interval, done,
            )  # fmt: skip
            routes = [
                r for r in self.probe_routes(service) if r.name in again and r.name not in done
            ]

    async def _pass(self, service: Service, routes: list[Route]) -> bool:
        """Probe `routes`; False when the pass failed or the network is down."""
        self.probing.add(service.name)
        for route in routes:
            self.progress.start(service.name, route.name)
        try:
            # In the routes' order, a stagger apart (or once every earlier route has its
            # verdict): the first routes get the probe slots first, as a race gives them the
            # first attempt; each verdict is recorded as soon as it is known.
            # A route that can carry none of the service's targets takes no turn (turns()).
            order = turns(service, routes)
            finished = [asyncio.Event() for turn in order if turn is not None]
            held = _Pass()
            results = await asyncio.gather(
                *(
                    self._probe_route(service, r, turn, finished, held)
                    for r, turn in zip(routes, order, strict=True)
                )
            )
        except Exception:
            # A bug, not a network condition (those are results): report it, keep monitoring.
            log.exception("probing %s failed", service.name)
            return False
        finally:
            self.probing.discard(service.name)
            for route in routes:
                self.progress.finish(service.name, route.name)
        offline = False
        if held.results:
            # Nothing answered through any route: the network decides what the failures mean.
            state = await self.watch.assess(results) if self.watch is not None else None
            if state is not None and state.offline:
                offline = True
                results = [offline_result(r, state) for r in results]
                for result in results:
                    # Nothing learnt about the routes: their health stays as it was.
                    self.results[(result.service, result.route)] = result
            else:
                for result in held.results:
                    self._commit(result)
        for result in results:
            if result.ok:
                log.info(
                    "%s via %s: works, %.0f ms", service.name, result.route, result.latency_ms or 0
                )
            else:
                log.info("%s via %s: %s", service.name, result.route, result.diagnosis)
        self.router.note_health_change(f"probed {service.name}")
        self._save()
        if self.on_probed is not None and not offline:
            # (Offline: a search would find nothing, and learn nothing about the routes.)
            self.on_probed(service, results)
        return not offline

    async def _probe_route(
        self,
        service: Service,
        route: Route,
        index: int | None = 0,
        finished: list[asyncio.Event] | None = None,
        held: _Pass | None = None,
    ) -> ProbeResult:
        """`index`: the route's turn among `finished` (None: it takes none, no waiting)."""
        if finished is not None and index is not None:
            lost = getattr(self.prober, "patience", None)  # (a test's stand-in may have none)
            await wait_turn(index, finished, self.router.stagger, lost)
        started = time.monotonic()
        try:
            result = await self.prober.probe(
                service, route, passed=lambda early: self._passed(early, held)
            )
        finally:
            self.progress.finish(service.name, route.name)
            if finished is not None and index is not None:
                finished[index].set()
        if self.tally is not None:
            # A route that cannot carry the service at all (tgws) has not failed.
            failed = result.applicable and result.failure is not None
            self.tally.probe_finished(
                service.name,
                route.name,
                time.monotonic() - started,
                result.failure.value if failed and result.failure else None,
                result.op.value if failed and result.op else None,
            )
        await self._record(result, held)
        return result

    async def _record(self, result: ProbeResult, held: _Pass | None = None) -> None:
        """One route's verdict, as soon as it is known: a route that works is used before
        the slower routes' probes end (the time to a working route on a new network).

        With a network watch, a result that got no answer at all is held until the pass
        ends (`held`): when no route of the service got one either, the network may be down,
        and then the result says "offline" and route health is left alone. Once any route
        answered, the held results and all later ones are recorded at once. A missing route
        out (the route lookup, no packet sent) shows "offline" before the pass ends."""
        if held is None or self.watch is None or held.answered:
            self._commit(result)
            return
        if result.ok or answered(result):
            held.answered = True
            for earlier in held.results:
                self._commit(earlier)
            held.results.clear()
            self._commit(result)
            return
        held.results.append(result)
        if not held.looked_up:
            held.looked_up = True
            await self.watch.check_route()
        if self.watch.state.offline and not held.answered:
            self.results[(result.service, result.route)] = offline_result(result, self.watch.state)

    def _passed(self, result: ProbeResult, held: _Pass | None) -> None:
        """A route's probe passed all but its freeze check (probe/passing.py). On a route not
        yet known on this network (a network detour has not seen), that verdict counts at
        once: ranked as a pass whose freeze check is unsure -- after every sure pass, before
        the routes not yet known -- until the full verdict replaces it (a freeze seen then
        fails the route). A route already known keeps what it has until the full verdict: a
        working one is not ranked down, a failing one not up, for the check's second."""
        if self.router.health.get(result.service, result.route).ok is not None:
            return
        if held is not None:
            held.answered = True
            for earlier in held.results:
                self._commit(earlier)
            held.results.clear()
        self._commit(result)
        self._early.add((result.service, result.route))

    def _commit(self, result: ProbeResult) -> None:
        self._early.discard((result.service, result.route))
        self.results[(result.service, result.route)] = result
        took = self.router.health.record_probe(result)
        if result.ok and took:
            self.router.note_health_change(f"probed {result.service} via {result.route}")

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.network, self.router.health)


def _names(routes: list[Route]) -> list[str]:
    return [route.name for route in routes]
