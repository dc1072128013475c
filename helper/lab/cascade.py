"""detour's built-in config against the lab: for each scenario, `detour probe --json` with
no config file, run on the censored network (the kernel-level lab's client namespace) of a lab
that stands in for the internet (`NetnsLab(stand_in=True)`: a public-looking network, and
Telegram's DC addresses and the public DoH/DoT resolvers' addresses sent to the lab's hosts).
The client trusts the lab's CA (SSL_CERT_FILE), as a device trusts the real CAs.

    python -m helper.lab.cascade                    # every scenario: the table, in Markdown
    python -m helper.lab.cascade sni-reset baseline # some
    python -m helper.lab.cascade --json out.json    # also the raw documents

The result is one cell per (scenario, service): the route `detour probe` names best, or,
when no route works, the diagnosis of the service through `direct` -- what blocks it. Each
scenario file's `[cascade]` table says what the cell should be (tests/lab/test_cascade.py).
Needs Linux and root, like the kernel-level lab.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from .netns import NetnsLab
from .scenario import load_scenario, scenario_names

__all__ = ["Cell", "ProbeRun", "probe_built_in", "render", "run_scenarios"]

# 11.0.0.0/8 has no routes on the internet's default-free table; inside the lab's namespaces
# it stands for "somewhere public" (the root namespace gets no route to it).
DEFAULT_STAND_IN_NETWORK = "11.77.0.0/16"


@dataclass(frozen=True)
class Cell:
    scenario: str
    service: str
    best: str | None  # the route `detour probe` names best; None: no route works
    failure: str | None  # when none works: how `direct` fails
    op: str | None
    diagnosis: str

    def text(self) -> str:
        if self.best is not None:
            return f"`{self.best}`"
        return f"none: {self.failure} during {self.op}"


@dataclass(frozen=True)
class ProbeRun:
    scenario: str
    seconds: float  # the whole `detour probe --json` run, start to exit
    document: dict[str, Any]

    def cells(self) -> list[Cell]:
        cells = []
        for service in self.document["services"]:
            best = service["best_route"]
            direct = next((r for r in service["routes"] if r["route"] == "direct"), None)
            failure = op = None
            diagnosis = ""
            if best is None and direct is not None:
                failure, op, diagnosis = direct["failure"], direct["op"], direct["diagnosis"]
            cells.append(Cell(self.scenario, service["name"], best, failure, op, diagnosis))
        return cells


async def probe_built_in(lab: NetnsLab, *extra: str) -> ProbeRun:
    """`detour probe --json` with the built-in config in the lab's client namespace, with a
    state directory of its own (a network detour has not seen)."""
    assert lab.directory is not None
    with tempfile.TemporaryDirectory(prefix="detour-cascade-") as state:
        env = {
            **os.environ,
            "SSL_CERT_FILE": str(lab.ca.ca_path),
            "DETOUR_STATE_DIR": state,
            # The network check's control targets: a public resolver's address that the
            # client namespace sends to the lab (as it does the DoH/DoT providers), so no
            # packet is meant for the real one.
            "DETOUR_CONTROL_TARGETS": "1.1.1.1:853",
        }
        command = lab.client_command(sys.executable, "-m", "helper", "probe", "--json", *extra)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await process.communicate()
        seconds = time.monotonic() - started
    if process.returncode not in (0, 1, 3):  # 3: the network is down (docs/routing.md)
        raise RuntimeError(f"detour probe exited {process.returncode}: {err.decode()[-2000:]}")
    return ProbeRun(lab.scenario.name, seconds, json.loads(out))


async def run_scenarios(
    names: list[str], network: str = DEFAULT_STAND_IN_NETWORK
) -> list[ProbeRun]:
    runs = []
    async with NetnsLab("baseline", network=network, stand_in=True) as lab:
        for name in names:
            await lab.set_scenario(load_scenario(name, lab.table))
            runs.append(await probe_built_in(lab))
    return runs


def render(runs: list[ProbeRun]) -> str:
    """The table of cells in Markdown: a row per scenario, a column per service."""
    services = [s["name"] for s in runs[0].document["services"]] if runs else []
    lines = [
        "| scenario | " + " | ".join(services) + " | probe run |",
        "|---|" + "---|" * len(services) + "---|",
    ]
    for run in runs:
        by_service = {c.service: c.text() for c in run.cells()}
        row = [by_service.get(s, "") for s in services]
        lines.append(f"| `{run.scenario}` | " + " | ".join(row) + f" | {run.seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m helper.lab.cascade")
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--network", default=DEFAULT_STAND_IN_NETWORK)
    parser.add_argument("--json", help="also write the probe documents to this file")
    args = parser.parse_args()
    names = args.scenarios or scenario_names()
    with contextlib.suppress(KeyboardInterrupt):
        runs = asyncio.run(run_scenarios(names, args.network))
        print(render(runs), end="")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({r.scenario: r.document for r in runs}, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
