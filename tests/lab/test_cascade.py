"""Acceptance for the built-in cascade: on every lab scenario, `detour probe --json` with the
built-in config (no -c), run on the censored network of a lab that stands in for the
internet, finds a working route for each service some serverless route can solve -- the one
the scenario's `[cascade]` table names -- and for the others says no route works, with the
diagnosis that table gives (how `direct` fails). docs/lab.md has the table of all cells.

`make test` runs a representative subset (each kind of winner, and a scenario where nothing
serverless works); DETOUR_FULL_LOAD=1 or CI=true runs every scenario."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.lab.cascade import ProbeRun, probe_built_in
from helper.lab.netns import NetnsLab
from helper.lab.scenario import load_scenario, scenario_names
from tests.lab.conftest import require_netns
from tests.support.networks import free_network

pytestmark = pytest.mark.asyncio(loop_scope="module")

FULL = any(
    os.environ.get(name, "").strip().lower() not in ("", "0", "false")
    for name in ("DETOUR_FULL_LOAD", "CI")
)
SUBSET = (
    "baseline",  # direct
    "dns-poison",  # encrypted DNS
    "sni-reset",  # TLS records
    "freeze-16k",  # a freeze seen by the probes; tgws for Telegram
    "dpi-first-hello-wins",  # a packet trick (fake)
    "dpi-strict",  # nothing serverless works
)
SCENARIOS = scenario_names() if FULL else SUBSET


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stand_in() -> AsyncIterator[NetnsLab]:
    require_netns()
    # A network of the kind no test run shares, moved to public-looking addresses (the
    # built-in config's resolvers refuse private answers for the services' names).
    second = free_network(kernel=True).split(".")[1]
    async with NetnsLab("baseline", network=f"11.{second}.0.0/16", stand_in=True) as lab:
        yield lab


def parse_cell(text: str) -> tuple[str | None, str | None, str | None]:
    if not text.startswith("none"):
        return text, None, None
    failure, _, op = text.partition(": ")[2].partition(" during ")
    return None, failure or None, op or None


@pytest.mark.parametrize("name", SCENARIOS)
async def test_the_built_in_config_finds_what_serverless_routes_can(
    stand_in: NetnsLab, name: str
) -> None:
    scenario = load_scenario(name, stand_in.table)
    raw = scenario.cascade
    assert raw, f"{name}: no [cascade] table"
    await stand_in.set_scenario(scenario)
    run: ProbeRun = await probe_built_in(stand_in)
    seen = {c.service: (c.best, c.failure, c.op) for c in run.cells()}
    want = {service: parse_cell(text) for service, text in raw.items()}
    problems = [
        f"{name}/{service}: {seen.get(service)} ({_diagnosis(run, service)}), expected {cell}"
        for service, cell in want.items()
        if seen.get(service) != cell
    ]
    assert not problems, "\n".join(problems)


def _diagnosis(run: ProbeRun, service: str) -> str:
    cells = [c for c in run.cells() if c.service == service]
    return cells[0].diagnosis if cells else ""
