"""`detour probe`: one pass over every service and route, with progress on a terminal, then
the table (or JSON) and a summary. When nothing answered at all, the control measurement
(network.py) decides whether the network is down: then the results say "offline", not
censorship, and the exit code is OFFLINE_EXIT."""

from __future__ import annotations

import asyncio
import json
import sys

from ..config import Config
from ..events import ProbeFinished, ProbeStarted
from ..routing.state import HealthStore
from .network import offline_result
from .report import FAIL_MARK, OK_MARK, ServiceReport, json_report, summary, table

__all__ = ["OFFLINE_EXIT", "probe_services"]

OFFLINE_EXIT = 3  # the network is down: nothing answered, not even the control targets


async def probe_services(
    config: Config,
    only: list[str] | None,
    *,
    as_json: bool,
    search: bool = False,
    store: HealthStore | None = None,
) -> int:
    """Probe every service (or those in `only`) through its routes; `search`: then search
    strategies for each service whose direct route fails (docs/search.md), keeping the
    winners in `store` for this network."""
    from ..engine import Engine

    if search and store is None:
        store = HealthStore()
    engine = Engine(config, probe_on_start=False, store=store if search else None)
    services = [s for s in engine.router.services if s.probes and (not only or s.name in only)]
    progress = asyncio.ensure_future(_show_progress(engine)) if sys.stderr.isatty() else None
    try:
        reports = []
        for service in services:
            routes = [engine.router.route(n) for n in engine.router.routes_of(service)]
            results = await engine.prober.probe_service(service, routes)
            reports.append(ServiceReport(service.name, results))
            if service.udp_probes:
                reports[-1].udp = await _probe_udp(engine, service, routes)
        network = await engine.network.assess(r for report in reports for r in report.results)
        if network.offline:
            # Nothing was learnt about the routes: no search either (it would find nothing).
            for report in reports:
                report.results = [offline_result(r, network) for r in report.results]
        elif search:
            await _search(engine, services, reports)
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        await engine.stop()
    if as_json:
        document = json_report(reports)
        document["network"] = network.to_json()
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table(reports))
        sys.stdout.write("\n" + summary(reports))
        if network.offline:
            sys.stdout.write(
                f"\nThe network is down ({network.reason}): these failures say nothing of "
                "censorship. Probe again once connected.\n"
            )
    if network.offline:
        return OFFLINE_EXIT
    return 0 if all(r.reachable for r in reports) else 1


async def _search(engine, services: list, reports: list[ServiceReport]) -> None:
    """Search each service whose direct route failed; a winner joins the service's routes
    (its confirming probe), and every report says what the search tried."""
    direct = {
        report.name: result
        for report in reports
        for result in report.results
        if str(engine.router.route(result.route).chain) == "direct"
    }
    if sys.stderr.isatty():
        print("searching strategies...", file=sys.stderr)
    found = await engine.search.run(services, direct)
    for report in reports:
        searched = found.services.get(report.name)
        if searched is None:
            continue
        report.search = searched.to_json()
        winner = found.results.get(report.name)
        if winner is not None:
            report.results.append(winner)


async def _show_progress(engine) -> None:
    """One line per probe as it finishes, on the terminal (stderr)."""
    running: set[tuple[str, str]] = set()
    async for event in engine.events.subscribe():
        if isinstance(event, ProbeStarted):
            running.add((event.service, event.route))
        elif isinstance(event, ProbeFinished):
            result = event.result
            running.discard((result.service, result.route))
            mark = OK_MARK if result.ok else FAIL_MARK
            text = "works" if result.ok else (result.diagnosis or str(result.failure))
            left = f" ({len(running)} running)" if running else ""
            print(f"  {mark} {result.service} via {result.route}: {text}{left}", file=sys.stderr)


def forget_strategies(services: list[str] | None, store: HealthStore | None = None) -> int:
    """`detour probe --forget`: drop what searches found on this network (for `services`)."""
    from ..routing.state import network_id

    store = store or HealthStore()
    network = network_id()
    kept = store.load_strategies(network)
    dropped = [s for s in kept if not services or s in services]
    store.save_strategies(network, {s: v for s, v in kept.items() if s not in dropped})
    names = [item["route"] for s in dropped for item in kept[s]]
    print(f"forgot {', '.join(names)}" if names else "no strategies kept for this network")
    return 0


async def _probe_udp(engine, service, routes) -> list[dict]:
    """The service's UDP probes through each route (helper/probe/udp.py), recorded in the
    router's UDP health."""
    from .udp import probe_udp_routes

    results = await probe_udp_routes(service, routes, engine.router.udp_health)
    return [result.to_json() for result in results]
