"""When the engine's strategy searches run: on demand, on a network detour has not seen, and
when no route of a service works any more; one at a time, and never again in vain.

`Searches` sits on the engine (anything with `router`, `monitor`, `search` and `config`:
each reload brings new ones) and is told about every probe the monitor finishes. Rules:

- a service whose direct route works is never searched on its own;
- on a network detour has not seen, each service whose direct route fails is searched once;
- a service none of whose routes works is searched, once: if that search finds nothing, it
  is not searched again on its own until one of its routes works again (a network where
  nothing works gets one verdict, not endless retries);
- services asked for while a search runs are searched next;
- a search that runs across a reload hands its winners to the new router (reload makes a new
  router, monitor and StrategySearch; the search keeps running on the old ones).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ..probe.result import ProbeResult
from ..services import Service
from ..status import SearchView, frozen_mapping
from .runner import SearchReport

__all__ = ["Searches"]

log = logging.getLogger("detour.search")


class SearchHost(Protocol):
    router: Any  # helper.routing.Router
    monitor: Any  # helper.routing.monitor.HealthMonitor
    search: Any  # runner.StrategySearch
    config: Any  # helper.config.Config


class Searches:
    def __init__(self, host: SearchHost) -> None:
        self.host = host
        self.new_network = False  # set at start: nothing is remembered of this network
        self._task: asyncio.Task[SearchReport] | None = None
        self._covering: set[str] = set()  # the services the running search covers
        self._wanted: set[str] = set()  # asked for while a search ran
        self._searched: set[str] = set()  # searched in this run
        self._fruitless: set[str] = set()  # searched, nothing found, no route works since
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def report(self) -> SearchReport | None:
        """The latest search (running or finished), None before the first."""
        return self.host.search.report

    def start(self, services: list[str] | None = None) -> asyncio.Task[SearchReport]:
        """Search `services` (default: every service with probe targets) in the background;
        a search already running is returned instead of a second one. Connections keep their
        routes meanwhile."""
        if self._task is not None and not self._task.done():
            return self._task
        router = self.host.router
        chosen = [s for s in router.services if s.probes and (not services or s.name in services)]
        self._covering = {s.name for s in chosen}
        # What the monitor last saw through the direct route is the search's first verdict.
        direct = {
            name: result
            for (name, route), result in self.host.monitor.results.items()
            if router.has_route(route) and str(router.route(route).chain) == "direct"
        }
        task = asyncio.get_running_loop().create_task(
            self._run(chosen, direct), name="detour-strategy-search"
        )
        self._task = task
        task.add_done_callback(self._done)
        return task

    def request(self, services: list[str], reason: str) -> None:
        """Search `services` now, or after the search that runs."""
        self._wanted.update(name for name in services if name not in self._covering)
        if self._wanted and not self._stopped and not self.running:
            names = sorted(self._wanted)
            self._wanted.clear()
            log.info("searching strategies for %s: %s", ", ".join(names), reason)
            self.start(names)

    async def _run(self, services: list[Service], direct: dict[str, ProbeResult]) -> SearchReport:
        searcher = self.host.search
        report = await searcher.run(services, direct)
        if self.host.search is not searcher:
            # A reload replaced the router while the search ran: what it found goes to the
            # router new connections use now (the one it ran on is retiring).
            taken = self.host.search.take_over(report)
            if taken:
                log.info("a search that ran across a reload: kept %s", ", ".join(taken))
        # A winner's confirming probe is the latest result of its cell, as a probe's is.
        for name, result in report.results.items():
            self.host.monitor.results[(name, result.route)] = result
        for name, searched in report.services.items():
            self._searched.add(name)
            if searched.winner is None:
                self._fruitless.add(name)
        return report

    def _done(self, task: asyncio.Task[SearchReport]) -> None:
        self._covering = set()
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            log.error("the strategy search failed", exc_info=error)
            return
        if self._wanted:
            self.request([], "asked while a search ran")

    def after_probe(self, service: Service, results: list[ProbeResult]) -> None:
        """The monitor probed `service`: search it if a rule above says so."""
        if not self.host.config.search.auto:
            return
        router = self.host.router
        working = router.active_route(service) is not None
        if working:
            self._fruitless.discard(service.name)
        direct = next(
            (
                r
                for r in results
                if router.has_route(r.route) and str(router.route(r.route).chain) == "direct"
            ),
            None,
        )
        if direct is None or direct.ok or service.name in self._fruitless:
            return
        if self.new_network and service.name not in self._searched:
            self.request([service.name], "a network detour has not seen")
        elif not working:
            self.request([service.name], f"no route of {service.name} works")

    def view(self) -> SearchView | None:
        """The latest search for a status snapshot (copies: nothing refers back here)."""
        report = self.report
        if report is None:
            return None
        return SearchView(
            running=self.running,
            started=report.started,
            finished=report.finished,
            services=frozen_mapping(
                (name, searched.to_json()) for name, searched in report.services.items()
            ),
        )

    def forget(self, service: str | None = None) -> list[str]:
        """Forget what searches found on this network (for `service`, or all)."""
        dropped = self.host.search.forget(service)
        if dropped:
            self.host.router.note_health_change("forgot the strategies a search found")
        return dropped

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
