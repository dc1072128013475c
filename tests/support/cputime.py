"""A pytest plugin that writes each test's CPU time (time.process_time, set-up, call and
tear-down), the CPU time of the processes it started and waited for (detour, the peers:
resource.getrusage(RUSAGE_CHILDREN), user and system) and wall time to $CPUTIME_OUT (one
file per xdist worker), most costly first; and a hypothesis profile of 1,000 examples,
`m1000`, for comparing property tests' costs (docs/testing.md "What a property test costs"):

    CPUTIME_OUT=/tmp/cost .venv/bin/python -m pytest -p tests.support.cputime \\
        --hypothesis-profile m1000 tests/fuzz/test_fuzz_wire.py

Columns: own CPU + children's CPU, own CPU, children's CPU, wall, test id. A child's time
counts for the test during which it was waited for (a module fixture's processes: the
file's last test).
"""

from __future__ import annotations

import os
import resource
import time

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "m1000",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)

_rows: list[tuple[float, float, float, float, str]] = []


def _children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    cpu, children, wall = time.process_time(), _children(), time.monotonic()
    yield
    own, child = time.process_time() - cpu, _children() - children
    _rows.append((own + child, own, child, time.monotonic() - wall, item.nodeid))


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("CPUTIME_OUT")
    if not out:
        return
    with open(f"{out}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}", "w") as f:
        for total, own, child, wall, nodeid in sorted(_rows, reverse=True):
            f.write(f"{total:8.2f} {own:8.2f} {child:8.2f} {wall:8.2f} {nodeid}\n")
