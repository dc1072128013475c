#!/usr/bin/env python3
"""Time to a working route on a network detour has not seen, with the built-in config: from
the engine's start to the first probe verdict that says a route works, per scenario and
service -- detour's start-up probing (every route of a service at once) against trying the
routes one by one in the config's order (each probed to its verdict before the next).

    sudo .venv/bin/python benchmarks/cascade.py                   # every scenario
    sudo .venv/bin/python benchmarks/cascade.py sni-reset freeze-16k
    sudo .venv/bin/python benchmarks/cascade.py --json out.json   # also the raw numbers
    sudo .venv/bin/python benchmarks/cascade.py --startup-only telegram-web-sni  # no one by one

The JSON also has each service's start-up `timeline`: every probe verdict as [seconds, route,
works, diagnosis, {target: [[step, ms, ok], ...]}], in the order they came (where a cell's
time went), and with each start-up time the machine's share of it: `lost`, the seconds the
event loop could not run (a timer's lateness beyond 20 ms, ticking every 100 ms, as the
probes' own measure: helper/probe/patience.py), and `cpu`, the seconds of CPU detour's
process had used by then (`time.process_time()`). On a loaded machine most of a cell's
time is `lost`: the process waits for the CPU, its routes do not.

Linux and root: it runs in the kernel-level lab standing in for the internet
(helper/lab/cascade.py, docs/lab.md "The built-in config against the lab"). For each scenario
this script runs itself with `--inner` in the lab's client namespace (the censored network,
with the lab's resolver as the system resolver and the lab's CA trusted), with an empty
state directory: no memory of the network.

* start-up (detour): an Engine with the built-in config (its listener on 127.0.0.1:0), started
  with its start-up probes; the time from `start()` until a route that works is in use for
  each service: its early verdict (ProbePassed: every target passed all but the freeze
  check, docs/routing.md "Health"), when its full verdict (ProbeFinished) then says it
  works, else the full verdict's time; the earliest such route (a route whose early verdict
  the freeze check then overturned does not count). The JSON also has `first_full` (the
  first full verdict that works), `first_probe` (the first probe's start) and
  `engine_start` (the seconds `start()` took);
* one by one: a Prober with the same settings, probing each route of the service in config
  order until one works (a dead route costs its probe's verdict, up to `[probe] timeout`).

A service no route solves has no time ("none"); the start-up column then shows how long it
took to know that (every route's verdict), the one-by-one column stops trying after 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIMIT = 60.0  # seconds: a service without a working route by then is "none"
SEQUENTIAL_LIMIT = 30.0  # one by one: stop trying after this long ("> 30 s")


async def inner(startup_only: bool = False) -> dict[str, Any]:
    """In the client namespace: both ways, for every built-in service (`startup_only`: the
    start-up way alone)."""
    from helper import events as bus
    from helper.config import load_config
    from helper.engine import Engine
    from helper.events import ProbeFinished, ProbeStarted
    from transports import Endpoint

    # (A version of detour without early verdicts, to compare with: none come.)
    early_kind: Any = getattr(bus, "ProbePassed", ())
    config = load_config()
    config = dataclasses.replace(
        config, listen=dataclasses.replace(config.listen, mixed=Endpoint("127.0.0.1", 0))
    )
    results: dict[str, Any] = {s.name: {"timeline": []} for s in config.services}

    engine = Engine(config)
    events = engine.events.subscribe(limit=100_000)
    meter = _Meter()
    started = time.monotonic()
    meter.start()
    await engine.start()
    started_in = time.monotonic() - started  # the engine's start, before any probe runs
    pending = set(results)
    finished: dict[str, int] = {name: 0 for name in results}
    # service -> route -> when its probe passed all but the freeze check (ProbePassed)
    passed: dict[str, dict[str, float]] = {name: {} for name in results}
    confirmed: dict[str, dict[str, float]] = {name: {} for name in results}  # -> working since
    routes = len(engine.router.routes)
    machine: dict[tuple[str, str], dict[str, float]] = {}  # (service, route) -> lost, cpu
    try:
        async with asyncio.timeout(LIMIT):
            while pending:
                event = await events.get()
                now = time.monotonic() - started
                if isinstance(event, ProbeStarted):
                    results[event.service].setdefault("first_probe", round(now, 2))
                    continue
                if not isinstance(event, (ProbeFinished, early_kind)):
                    continue
                result = event.result
                service = result.service
                early = not isinstance(event, ProbeFinished)
                results[service]["timeline"].append(
                    [
                        round(now, 2),
                        result.route + (" (passed)" if early else ""),
                        result.ok,
                        result.diagnosis[:80],
                        {
                            t.target: [[x.name, round(x.ms), x.ok] for x in t.steps]
                            for t in result.targets
                        },
                    ]
                )
                if early:
                    passed[service][result.route] = now
                    machine[(service, result.route)] = meter.now()
                    continue
                finished[service] += 1
                if result.ok:
                    # Working since its early verdict, when it had one (used from then on).
                    confirmed[service][result.route] = passed[service].get(result.route, now)
                    machine.setdefault((service, result.route), meter.now())
                    results[service].setdefault("first_full", round(now, 2))
                if service not in pending:
                    continue
                if confirmed[service]:
                    # Done once no route that passed before the first full verdict is open.
                    first_full = results[service]["first_full"]
                    open_early = [
                        r
                        for r, at in passed[service].items()
                        if at <= first_full and r not in confirmed[service]
                        and not _ended(results[service]["timeline"], r)
                    ]  # fmt: skip
                    if not open_early:
                        route = min(confirmed[service], key=confirmed[service].__getitem__)
                        seconds = confirmed[service][route]
                        results[service]["startup"] = {
                            "seconds": seconds,
                            "route": route,
                            **machine[(service, route)],
                        }
                        pending.discard(service)
                elif finished[service] == routes:
                    results[service]["startup"] = {"seconds": now, "route": None, **meter.now()}
                    pending.discard(service)
    except TimeoutError:
        pass
    finally:
        meter.stop()
        await engine.stop()

    for entry in results.values():
        entry["engine_start"] = round(started_in, 2)
    if startup_only:
        return results
    engine = Engine(config, probe_on_start=False)
    await engine.start()
    try:
        for service in engine.router.services:
            t0 = time.monotonic()
            found = None
            for route in engine.router.candidates(service):
                if time.monotonic() - t0 > SEQUENTIAL_LIMIT:
                    break
                result = await engine.prober.probe(service, route)
                if result.ok:
                    found = route.name
                    break
            results[service.name]["sequential"] = {
                "seconds": time.monotonic() - t0,
                "route": found,
            }
    finally:
        await engine.stop()
    return results


async def outer(names: list[str], network: str, startup_only: bool = False) -> dict[str, Any]:
    from helper.lab.netns import NetnsLab
    from helper.lab.scenario import load_scenario

    out: dict[str, Any] = {}
    async with NetnsLab("baseline", network=network, stand_in=True) as lab:
        for name in names:
            await lab.set_scenario(load_scenario(name, lab.table))
            with tempfile.TemporaryDirectory(prefix="detour-bench-") as state:
                env = {
                    **os.environ,
                    "SSL_CERT_FILE": str(lab.ca.ca_path),
                    "DETOUR_STATE_DIR": state,
                    "PYTHONPATH": str(ROOT),
                }
                inner_args = ["--inner", *(["--startup-only"] if startup_only else [])]
                command = lab.client_command(sys.executable, str(Path(__file__)), *inner_args)
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                    env=env,
                )
                stdout, _ = await process.communicate()
            out[name] = json.loads(stdout)
            print(_row(name, out[name]), flush=True)
    return out


class _Meter:
    """The event loop's lost time since `start()` (helper/probe/patience.py's LagMeter, its
    timer running throughout) and the process's CPU time."""

    def __init__(self) -> None:
        from helper.probe.patience import LagMeter

        self.meter = LagMeter()
        self.cpu = time.process_time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_at(self.meter.start(self._loop.time()), self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_at(self.meter.tick(self._loop.time()), self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def now(self) -> dict[str, float]:
        assert self._loop is not None
        return {
            "lost": round(self.meter.lost_at(self._loop.time()), 2),
            "cpu": round(time.process_time() - self.cpu, 2),
        }


def _ended(timeline: list[Any], route: str) -> bool:
    """Whether `route`'s full verdict is in `timeline` (not only its early one)."""
    return any(entry[1] == route for entry in timeline)


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "--"
    route = entry["route"]
    return f"{entry['seconds']:.1f} s `{route}`" if route else f"none ({entry['seconds']:.0f} s)"


def _row(name: str, result: dict[str, Any]) -> str:
    cells = []
    for service in ("telegram", "whatsapp", "signal"):
        entry = result.get(service, {})
        cells += [_cell(entry.get("startup")), _cell(entry.get("sequential"))]
    return f"| `{name}` | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", default="11.78.0.0/16")
    parser.add_argument("--json")
    parser.add_argument(
        "--startup-only", action="store_true", help="only the start-up column (no one by one)"
    )
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(asyncio.run(inner(args.startup_only))))
        return 0
    from helper.lab.scenario import scenario_names

    names = args.scenarios or scenario_names()
    print("| scenario | telegram: start-up | one by one | whatsapp: start-up | one by one "
          "| signal: start-up | one by one |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    results = asyncio.run(outer(names, args.network, args.startup_only))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
