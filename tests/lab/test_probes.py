"""Probing in the lab: for every scenario, what detour's probes report for each service
through each route -- which route is best, and for each blocked route the failure and the
operation the scenario states -- in both of the lab's modes."""

from __future__ import annotations

import dataclasses

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from helper.lab.scenario import load_scenario, scenario_names
from helper.probe.report import ServiceReport

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def probe_all(lab: Lab) -> dict[str, ServiceReport]:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    engine = Engine(config, probe_on_start=False)
    try:
        reports = {}
        for service in engine.router.services:
            results = await engine.prober.probe_service(service, engine.router.routes)
            reports[service.name] = ServiceReport(service.name, results)
        return reports
    finally:
        await engine.stop()


@pytest.mark.parametrize("scenario", scenario_names())
async def test_probe_reports_what_the_scenario_says(lab: Lab, scenario: str) -> None:
    await lab.set_scenario(scenario)
    reports = await probe_all(lab)
    expected = load_scenario(scenario, lab.table)
    problems = []
    for service, route in expected.best.items():
        if reports[service].best_route != route:
            problems.append(
                f"{service}: best route {reports[service].best_route}, expected {route}"
            )
    for expectation in expected.expectations:
        works, failure, op = expectation.expected(lab.netns)
        result = next(
            r for r in reports[expectation.service].results if r.route == expectation.route
        )
        seen = (
            result.ok,
            result.failure.value if result.failure else None,
            result.op.value if result.op else None,
        )
        want = (works, failure, op if failure else None)
        if failure is None and not works:
            seen, want = seen[:1], want[:1]  # "does not work", however
        elif op is None:
            seen, want = seen[:2], want[:2]
        if seen != want:
            problems.append(
                f"{expectation.service} via {expectation.route}: {seen} ({result.diagnosis}), "
                f"expected {want}"
            )
    assert not problems, "\n".join(problems)


async def test_a_split_client_hello_that_is_still_reset_is_diagnosed_as_reassembling(
    lab: Lab,
) -> None:
    await lab.set_scenario("sni-reset-reassembling")
    reports = await probe_all(lab)
    direct, fragmented = (
        next(r for r in reports["signal"].results if r.route == name)
        for name in ("direct", "tls-fragment")
    )
    assert direct.diagnosis.startswith("reset right after the TLS ClientHello: SNI-based DPI")
    assert fragmented.diagnosis.startswith(
        "reset even with the ClientHello split: the DPI reassembles"
    )
    await lab.set_scenario("sni-reset")
    reports = await probe_all(lab)
    assert next(r for r in reports["signal"].results if r.route == "tls-fragment").ok


async def test_probe_steps_are_timed(lab: Lab) -> None:
    await lab.set_scenario("baseline")
    reports = await probe_all(lab)
    direct = reports["telegram"].results[0]
    https = direct.targets[0]
    assert [s.name for s in https.steps] == [
        "resolve", "connect", "tls_handshake", "http_round_trip", "download",
    ]  # fmt: skip
    assert all(step.ok and step.ms >= 0 for step in https.steps)
    assert https.rate_kbps is not None and https.latency_ms is not None
    assert dataclasses.asdict(direct.targets[1].steps[0])["name"] == "connect"  # an IP: no resolve
