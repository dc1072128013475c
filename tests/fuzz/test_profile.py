"""The hypothesis profile chosen in tests/conftest.py is the one every property in the suite runs
with, in tests/fuzz and elsewhere (tests/unit has properties too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from tests import conftest
from tests.conftest import ROOT
from tests.fuzz import test_fuzz_socks, test_fuzz_tls
from tests.unit import test_guard, test_metrics


def bound(test) -> settings:
    """The settings hypothesis bound to a @given test when its module was imported."""
    return test._hypothesis_internal_use_settings


def test_profile_is_active(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("hypothesis_profile", default=None):
        pytest.skip("--hypothesis-profile overrides ours")
    name = conftest.fuzz_profile(pytestconfig)
    examples = conftest.PROFILES[name]
    assert settings.get_current_profile_name() == name
    assert (settings.default.max_examples, settings.default.deadline) == (examples, None)
    for test in (
        test_fuzz_socks.test_socks5_and_socks4_parsers,
        test_guard.test_ipv4_and_ipv6_addresses_are_judged_as_the_kernel_routes,
        test_metrics.test_any_label_value_reads_back,
    ):
        assert (bound(test).max_examples, bound(test).deadline) == (examples, None), test
    # The one property that sets its own count derives it from the profile's.
    silence = test_fuzz_tls.test_any_answer_then_silence_is_a_dial_error
    assert bound(silence).max_examples == max(20, examples // 100)


# Prints the examples hypothesis bound to each property a run collected, and its time limit.
PLUGIN = """
import pytest
from hypothesis import is_hypothesis_test

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if is_hypothesis_test(item.obj):
            examples = item.obj._hypothesis_internal_use_settings.max_examples
            print("BOUND", item.nodeid, examples, item.get_closest_marker("timeout").args)
"""


def test_a_property_outside_tests_fuzz_run_alone_gets_the_profile(tmp_path: Path) -> None:
    """A run of one file of tests/unit (tests/fuzz not collected) binds the profile asked for,
    with its time limit: the variable decides, not which directories a run collected first."""
    (tmp_path / "bound_plugin.py").write_text(PLUGIN)
    env = {**os.environ, conftest.PROFILE_ENV: "ci"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "bound_plugin",
         "--collect-only", "-q", "tests/unit/test_metrics.py"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_any_label_value_reads_back 10000 (600,)\n" in result.stdout, result.stdout


def test_an_unknown_profile_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(conftest.PROFILE_ENV, "quick")
    with pytest.raises(pytest.UsageError, match=r"DETOUR_FUZZ_PROFILE='quick': expected one of"):
        conftest.fuzz_profile()
