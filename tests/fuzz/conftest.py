"""Hypothesis profiles for the property tests in this directory.

    ci    10,000 examples per property (the default)
    dev   200 examples, for a quick run while editing:  DETOUR_FUZZ_PROFILE=dev pytest tests/fuzz
    long  200,000 examples, for a soak:                 DETOUR_FUZZ_PROFILE=long pytest tests/fuzz
          (or `pytest --long`)

`--hypothesis-profile NAME` still wins when given. No deadline: the machines that run this are
noisy, and a slow example is not a failure.

Hypothesis binds a test's settings when its module is imported, so the profile is loaded in
pytest_configure, which pytest runs for this conftest before it imports the test modules
next to it. The active profile is global: test modules imported after this directory that use
@given without their own @settings see it too.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILE_ENV = "DETOUR_FUZZ_PROFILE"
DEFAULT_PROFILE = "ci"

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=10_000, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("long", max_examples=200_000, **_COMMON)


def fuzz_profile(config: pytest.Config | None = None) -> str:
    if config is not None and config.getoption("--long", default=False):
        return "long"
    name = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    if name not in ("ci", "dev", "long"):
        raise pytest.UsageError(f"{PROFILE_ENV}={name!r}: expected ci, dev or long")
    return name


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", default=None):
        return  # the hypothesis plugin loaded the profile the user asked for
    settings.load_profile(fuzz_profile(config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A soak runs for minutes per property: lift the suite's per-test timeout for it.
    if settings.get_current_profile_name() == "long":
        for item in items:
            if "tests/fuzz/" in item.nodeid.replace("\\", "/"):
                item.add_marker(pytest.mark.timeout(0))


def pytest_report_header(config: pytest.Config) -> str:
    return f"detour fuzz profile: {settings.get_current_profile_name()}"
