"""The hypothesis profile chosen in conftest.py is the one these properties run with."""

from __future__ import annotations

import os

from hypothesis import settings

from tests.fuzz import test_fuzz_socks

EXAMPLES = {"ci": 10_000, "dev": 200, "long": 200_000}


def test_profile_is_active(pytestconfig) -> None:
    if pytestconfig.getoption("hypothesis_profile", default=None):
        return  # --hypothesis-profile overrides ours
    name = (
        "long"
        if pytestconfig.getoption("--long", default=False)
        else (os.environ.get("DETOUR_FUZZ_PROFILE", "").strip() or "ci")
    )
    assert settings.get_current_profile_name() == name
    assert settings.default.max_examples == EXAMPLES[name]
    assert settings.default.deadline is None
    # Settings are bound when a test module is imported: check a property got the profile.
    bound = test_fuzz_socks.test_socks5_request._hypothesis_internal_use_settings
    assert (bound.max_examples, bound.deadline) == (EXAMPLES[name], None)
