"""Every scenario, checked with a plain client (no detour): each blocked endpoint fails the
way the scenario says, at the operation it says, and its unblocked controls work -- in the
same lab, switched from scenario to scenario while it runs, in both of the lab's modes."""

from __future__ import annotations

import pytest

from helper.lab.lab import Lab
from helper.lab.scenario import load_scenario, scenario_names
from tests.lab.conftest import plain_check

CASES = [
    pytest.param(name, i, id=f"{name}:{check.target}")
    for name in scenario_names()
    for i, check in enumerate(load_scenario(name).checks)
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("scenario, index", CASES)
async def test_check(lab: Lab, scenario: str, index: int) -> None:
    if (why := load_scenario(scenario).needs_netns) and not lab.netns:
        pytest.skip(f"the userland lab cannot run it: {why}")
    if lab.scenario.name != scenario:
        await lab.set_scenario(scenario)
    check = lab.scenario.checks[index]
    expected = check.expected(lab.netns)
    # Where the scenario says the client waits in vain (a timeout, a download that stalls),
    # 1 s of silence shows it as well as the client's usual 2 s (the lab answers everything
    # else at once).
    timeout = 1.0 if expected[0] in ("generic_timeout_error", "stalled") else 2.0
    outcome = await plain_check(lab, check.target, download=check.download, timeout=timeout)
    assert (outcome.failure, outcome.op) == expected, str(outcome)
    if check.stalled_between:
        low, high = check.stalled_between
        assert low <= outcome.received <= high, f"stalled after {outcome.received} bytes"
    if check.rate:
        assert outcome.rate is not None
        assert check.rate * 0.75 <= outcome.rate <= check.rate * 1.25, f"{outcome.rate:.0f} B/s"


def test_every_scenario_has_a_working_control() -> None:
    for name in scenario_names():
        scenario = load_scenario(name)
        assert any(c.works for c in scenario.checks), f"{name} has no negative control"
