"""The strategy search with I/O: makes the attempts search.py asks for, as probes
(helper/probe/) of candidate routes against each service's own targets, and turns the winners
into routes of the running router, kept per network.

The search's probes go through their own Prober (no events: candidates are not routes yet,
and what the UI shows are the router's routes), sharing the engine's handshake budget, so
probes, searches and races together stay under it. A search never touches the routes
connections use while it runs: a winner is added only when it is stable, after the
service's own routes, and health puts it first only if none of those works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from transports import parse_chain
from transports.desync import SUPPORTED as PACKETS_SUPPORTED

from ..probe.probe import Prober
from ..probe.result import ProbeResult
from ..routing.router import Route, Router
from ..routing.state import HealthStore
from ..services import Service
from .candidates import ROUTE_PREFIX, Candidate
from .search import Attempt, Outcome, Search, ServiceSearch

__all__ = ["SearchReport", "StrategySearch", "outcome_of", "restore_strategies"]

log = logging.getLogger("detour.search")


def outcome_of(result: ProbeResult) -> Outcome:
    failed = result.failed
    return Outcome(
        ok=result.ok,
        failure=result.failure.value if result.failure else None,
        op=result.op.value if result.op else None,
        latency_ms=result.latency_ms,
        detail=failed.detail if failed is not None else "",
    )


@dataclass
class SearchReport:
    """What one search did: per service, the direct verdict, what was tried, what won."""

    started: float = field(default_factory=time.time)
    finished: float | None = None
    services: dict[str, ServiceSearch] = field(default_factory=dict)
    results: dict[str, ProbeResult] = field(default_factory=dict)  # service -> winner's probe

    @property
    def running(self) -> bool:
        return self.finished is None

    def winner(self, service: str) -> Candidate | None:
        search = self.services.get(service)
        return search.winner if search is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "started": round(self.started, 3),
            "finished": None if self.finished is None else round(self.finished, 3),
            "services": {name: s.to_json() for name, s in self.services.items()},
        }


class StrategySearch:
    def __init__(
        self,
        router: Router,
        prober: Prober,
        *,
        confirm: int = 2,
        attempts: int = 30,
        packets: bool = True,
        store: HealthStore | None = None,
        network: str = "",
    ) -> None:
        self.router = router
        self.prober = prober
        self.confirm = confirm
        self.attempts = attempts
        self.packets = packets and PACKETS_SUPPORTED
        self.store = store
        self.network = network
        self.report: SearchReport | None = None  # the latest search (running or done)
        self._routes: dict[str, Route] = {}  # candidate chain -> its route

    def resolvers(self) -> list[str]:
        """The encrypted resolvers of the router's routes, as `resolve:` layers."""
        found: list[str] = []
        for route in self.router.routes:
            base = route.chain.layers[0]
            encrypted = base.name == "resolve" and route.chain.resolver_kind in ("doh", "dot")
            if encrypted and base.text not in found:
                found.append(base.text)
        return found

    def _direct(self) -> Route:
        for route in self.router.routes:
            if str(route.chain) == "direct":
                return route
        return self._route_for(Candidate("direct", "direct"), "direct")

    def _route_for(self, candidate: Candidate, name: str | None = None) -> Route:
        route = self._routes.get(candidate.chain)
        if route is None:
            chain = parse_chain(candidate.chain)
            route = self.router.build_route(name or candidate.route_name, chain)
            self._routes[candidate.chain] = route
        return route

    async def run(
        self, services: Iterable[Service], direct: dict[str, ProbeResult] | None = None
    ) -> SearchReport:
        """Search every service in `services` that has probe targets; `direct`: results of
        its direct route already known (else it is probed first)."""
        services = [s for s in services if s.probes]
        report = self.report = SearchReport()
        try:
            known = dict(direct or {})
            missing = [s for s in services if s.name not in known]
            route = self._direct()
            for result in await asyncio.gather(*(self.prober.probe(s, route) for s in missing)):
                known[result.service] = result
            by_name = {s.name: s for s in services}
            resolvers = self.resolvers()
            for service in services:
                targets = [str(t) for t in service.probes]
                names = _screening_targets(service, known[service.name])
                report.services[service.name] = ServiceSearch(
                    service.name,
                    targets,
                    tls_targets=names,
                    direct=outcome_of(known[service.name]),
                    packets=self.packets,
                    resolvers=resolvers,
                    confirm=self.confirm,
                    max_attempts=self.attempts,
                )
            search = Search(report.services.values())
            running: dict[asyncio.Task[ProbeResult], Attempt] = {}
            while True:
                for attempt in search.next_attempts():
                    task = asyncio.ensure_future(self._attempt(by_name[attempt.service], attempt))
                    running[task] = attempt
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    attempt = running.pop(task)
                    result = task.result()
                    outcome = outcome_of(result)
                    log.info(
                        "search %s: %s (%s) %s",
                        attempt.service,
                        attempt.candidate.chain,
                        attempt.target or "every target",
                        outcome.describe(),
                    )
                    search.record(attempt, outcome)
                    winner = report.services[attempt.service].winner
                    if winner is not None and winner == attempt.candidate:
                        report.results[attempt.service] = result
                        self._adopt(by_name[attempt.service], winner, result)
        finally:
            report.finished = time.time()
        self._save(report)
        for name, service_search in report.services.items():
            log.info("search %s: %s", name, service_search.verdict)
        return report

    async def _attempt(self, service: Service, attempt: Attempt) -> ProbeResult:
        route = self._route_for(attempt.candidate)
        if attempt.target is not None:
            target = next(t for t in service.probes if str(t) == attempt.target)
            service = dataclasses.replace(service, probes=(target,))
        return await self.prober.probe(service, route)

    def _adopt(self, service: Service, winner: Candidate, result: ProbeResult) -> None:
        """The winner becomes a route of the router for `service`, with its probe's health,
        in place of what earlier searches found for it."""
        route = self._route_for(winner)
        # (no connection can start between these two: nothing here waits)
        self.router.forget_found(service.name)
        self.router.add_found(service.name, route)
        self.router.health.record_probe(result)
        self.router.note_health_change(f"a search found {route.name} for {service.name}")

    def take_over(self, report: SearchReport) -> list[str]:
        """A search that ran on a router a reload has replaced (its winners went to that
        router, which no new connection uses): its winners become routes of this one, with
        their probes' health, and are kept for this network. Returns the winners' routes."""
        services = {s.name: s for s in self.router.services}
        taken = []
        for name, searched in report.services.items():
            result = report.results.get(name)
            if searched.winner is None or result is None or name not in services:
                continue
            self._adopt(services[name], searched.winner, result)
            taken.append(self._route_for(searched.winner).name)
        self._save(report)
        return taken

    def _save(self, report: SearchReport) -> None:
        """Keep this search's winners for this network: a service searched gets its winner
        (or nothing, when nothing works any more); the others keep what they had."""
        if self.store is None or not self.network:
            return
        kept = self.store.load_strategies(self.network)
        now = found_strategies(self.router)
        for service in report.services:
            kept.pop(service, None)
            if service in now:
                kept[service] = now[service]
        self.store.save_strategies(self.network, kept)

    def forget(self, service: str | None = None) -> list[str]:
        """Forget the strategies found (for `service`, or all), here and in the state file."""
        dropped = self.router.forget_found(service)
        self._routes = {c: r for c, r in self._routes.items() if r.name not in dropped}
        if self.store is not None and self.network:
            self.store.save_strategies(self.network, found_strategies(self.router))
        return dropped


def _screening_targets(service: Service, direct: ProbeResult) -> list[str]:
    """The targets a candidate is screened through: those with a server name that failed
    through the direct route (one that passes says nothing about a candidate), else every
    target that failed, else every target with a server name."""
    failed = {t.target for t in direct.targets if not t.ok and not t.skipped}
    named = [str(t) for t in service.probes if t.kind in ("tls", "https")]
    return (
        [t for t in named if t in failed]
        or [str(t) for t in service.probes if str(t) in failed]
        or named
    )


def found_strategies(router: Router) -> dict[str, list[dict]]:
    return {
        service: [
            {"route": name, "chain": str(router.route(name).chain)}
            for name in names
            if router.has_route(name)
        ]
        for service, names in router.found.items()
        if names
    }


def restore_strategies(router: Router, store: HealthStore, network: str) -> int:
    """Add the strategies found on `network` before to `router`; returns how many."""
    count = 0
    services = {s.name for s in router.services}
    for service, items in store.load_strategies(network).items():
        if service not in services:
            continue
        for item in items:
            name, chain = str(item["route"]), str(item["chain"])
            if not name.startswith(ROUTE_PREFIX):
                continue
            try:
                route = (
                    router.route(name)
                    if router.has_route(name)
                    else router.build_route(name, parse_chain(chain))
                )
            except ValueError as exc:  # a chain this version cannot build
                log.warning("not restoring %s (%s): %s", name, chain, exc)
                continue
            router.add_found(service, route)
            count += 1
    return count
