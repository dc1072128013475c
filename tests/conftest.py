"""Shared fixtures: origins (HTTP, HTTPS with a test CA, echo, integrity) running in a
background loop, detour engines in-process, and detour as a real subprocess; and the
hypothesis profile every property test in the suite runs with.

Hypothesis profiles (DETOUR_FUZZ_PROFILE):

    dev   200 examples per property: the default (`make test`, a run while editing)
    ci    10,000 examples per property: what CI runs (`.ci/run` sets DETOUR_FUZZ_PROFILE=ci);
          a property may take up to 10 minutes
    long  200,000 examples per property, for a soak (or `pytest --long`); no time limit

`--hypothesis-profile NAME` still wins when given. No deadline: the machines that run this are
noisy, and a slow example is not a failure.

Hypothesis binds a test's settings when its module is imported, so the profile is registered
when this file is imported and loaded in pytest_configure, both before any test module is
imported: every @given in tests/ without its own @settings gets the same profile, whichever
directories or files a run names.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

# No test sends a packet to the public control targets (docs/routing.md "Offline or
# censored"): detour in-process and every detour subprocess (which inherits this) connects
# to a closed loopback port instead, which answers at once (a refusal: the network is up).
# Configs that name their own control targets (the labs) keep them.
os.environ["DETOUR_CONTROL_TARGETS"] = "127.0.0.1:9"
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.probe import network
from tests.support import origins
from tests.support.peers import free_port
from transports import Endpoint

ROOT = Path(__file__).resolve().parent.parent

PROFILE_ENV = "DETOUR_FUZZ_PROFILE"
DEFAULT_PROFILE = "dev"
PROFILES = {"dev": 200, "ci": 10_000, "long": 200_000}  # examples per property
# Seconds a property may take (the suite's timeout is 120 s): a CI machine under load took
# more than 120 s for 10,000 examples of the slowest ones (25 s of CPU time).
PROPERTY_TIMEOUT = {"ci": 600, "long": 0}

for _name, _examples in PROFILES.items():
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the property tests with the 'long' hypothesis profile (200,000 examples)",
    )


def fuzz_profile(config: pytest.Config | None = None) -> str:
    """The profile this run asked for: --long, else DETOUR_FUZZ_PROFILE, else the default."""
    if config is not None and config.getoption("--long", default=False):
        return "long"
    name = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_ENV}={name!r}: expected one of {', '.join(PROFILES)}")
    return name


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before hypothesis' own plugin, which then loads --hypothesis-profile when given.
    settings.load_profile(fuzz_profile(config))
    # pytest-xdist (3.6 and later) hands out files by their number of tests unless told not
    # to: keep the order _longest_files_first gives, which is by what the tests cost.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _longest_files_first(items)
    timeout = PROPERTY_TIMEOUT.get(settings.get_current_profile_name())
    if timeout is None:
        return
    for item in items:
        own = item.get_closest_marker("timeout")  # a property that set its own keeps it
        if isinstance(item, pytest.Function) and is_hypothesis_test(item.obj) and own is None:
            item.add_marker(pytest.mark.timeout(timeout))


def _is_property(item: pytest.Item) -> bool:
    return isinstance(item, pytest.Function) and is_hypothesis_test(item.obj)


# What a test is guessed to cost, in seconds, to order the files: a property test by its
# number of examples (10,000 take tens of seconds), a test marked slow, a unit test (no
# sockets), any other test (real sockets, peers, processes, labs).
SECONDS_PER_EXAMPLE = 1 / 400
SLOW_TEST = 10.0
UNIT_TEST = 0.02
OTHER_TEST = 1.0
UNIT = ROOT / "tests" / "unit"


def _cost(item: pytest.Item) -> float:
    if _is_property(item):
        own = getattr(item.obj, "_hypothesis_internal_use_settings", None)  # its @settings
        # Properties of a kind share a test, each drawing its own argument: every draw adds
        # to an example's cost, though less than a test of its own would.
        handle = getattr(item.obj, "hypothesis", None)
        drawn = len(getattr(handle, "_given_kwargs", None) or ()) or 1
        return (own or settings.default).max_examples * SECONDS_PER_EXAMPLE * (1 + drawn) / 2
    if item.get_closest_marker("slow") is not None:
        return SLOW_TEST
    return UNIT_TEST if item.path.is_relative_to(UNIT) else OTHER_TEST


def _longest_files_first(items: list[pytest.Item]) -> None:
    """Test files by what their tests are guessed to cost (_cost), the costliest first, each
    file's tests together and in their own order: the test workers (`make test`, one file at
    a time each) then end on short files instead of one worker finishing a long one alone
    while the other idles. Deterministic, as every worker must collect the same order."""
    files: dict[object, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    ordered = sorted(
        enumerate(files.values()),
        key=lambda pair: (-round(sum(map(_cost, pair[1])), 3), pair[0]),
    )
    items[:] = [item for _, tests in ordered for item in tests]


def pytest_report_header(config: pytest.Config) -> str:
    current = settings.default
    return (
        f"hypothesis profile: {settings.get_current_profile_name()} "
        f"({current.max_examples} examples per property; {PROFILE_ENV} chooses)"
    )


@pytest.fixture(autouse=True)
def own_state_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Each test gets a state directory of its own (DETOUR_STATE_DIR, inherited by the detour
    processes it starts): `detour run` remembers per network what worked, and one test's
    memory must not choose another's routes, nor a person's own memory a test's."""
    monkeypatch.setenv("DETOUR_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> origins.TestCA:
    return origins.TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def background() -> Iterator[origins.BackgroundLoop]:
    loop = origins.BackgroundLoop()
    yield loop
    loop.close()


def _session_origin(background: origins.BackgroundLoop, start) -> Iterator[origins.Origin]:
    origin = background.run(start)
    yield origin
    background.run(origins.stop(origin))


@pytest.fixture(scope="session")
def http_origin(background: origins.BackgroundLoop) -> Iterator[origins.Origin]:
    yield from _session_origin(background, origins.start_http())


@pytest.fixture(scope="session")
def https_origin(
    background: origins.BackgroundLoop, test_ca: origins.TestCA
) -> Iterator[origins.Origin]:
    context = test_ca.server_context("origin.test", "127.0.0.1")
    yield from _session_origin(background, origins.start_http(ssl_context=context))


@pytest.fixture(scope="session")
def echo_origin(background: origins.BackgroundLoop) -> Iterator[origins.Origin]:
    yield from _session_origin(background, origins.start_echo())


@pytest.fixture(scope="session")
def integrity_origin(background: origins.BackgroundLoop) -> Iterator[origins.Origin]:
    yield from _session_origin(background, origins.start_integrity())


@pytest.fixture(autouse=True)
def _public_controls_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process engines never connect to the default control targets (public resolvers:
    docs/routing.md "Offline or censored"): traffic stays on loopback and in the lab, whose
    network is up. A public control target counts as answering, with no packet sent; one on
    loopback or in a lab range is connected to for real (tests/unit/test_network.py scripts
    its own; tests/integration/test_offline_netns.py runs detour in a namespace)."""
    real = network.control_connect

    async def connect(target: Endpoint, timeout: float) -> bool:
        if target.ip is not None and target.ip.is_global:
            return True
        return await real(target, timeout)

    monkeypatch.setattr(network, "control_connect", connect)


def config_text(
    *, routes: dict[str, str] | None = None, default: str | None = None, extra: str = ""
) -> str:
    """A small config, whole (not on the built-in config): the given routes (name ->
    chain), hosts for origin.test, extra TOML."""
    routes = routes or {"direct": "direct"}
    parts = [
        '[base]\nconfig = "none"\n',
        '[listen]\nmixed = "127.0.0.1:0"\nhandshake_timeout = "2s"\n',
        '[dns]\nhosts = { "origin.test" = ["127.0.0.1"] }\n',
    ]
    if default:
        parts.append(f'[default]\npolicy = "{default}"\n')
    for name, chain in routes.items():
        parts.append(f'[[route]]\nname = "{name}"\nchain = "{chain}"\n')
    parts.append(textwrap.dedent(extra))
    return "\n".join(parts)


@pytest.fixture
async def start_engine() -> AsyncIterator[Callable[..., asyncio.Future[Engine]]]:
    """Start detour in-process from config text; stopped when the test ends."""
    engines: list[Engine] = []

    async def start(text: str | Config, **kwargs) -> Engine:
        config = text if isinstance(text, Config) else parse_config(text, "test config")
        engine = Engine(config, **kwargs)
        await engine.start()
        engines.append(engine)
        return engine

    yield start  # type: ignore[misc]
    for engine in engines:
        await engine.stop()


@dataclass
class DetourProcess:
    process: subprocess.Popen[str]
    address: tuple[str, int]
    output_path: Path

    @property
    def output(self) -> str:
        return self.output_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"detour did not stop on signal {sig}:\n{self.output}"
                ) from None
        return self.process.returncode


def detour_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "helper", *args]


@pytest.fixture
def detour_process(tmp_path: Path) -> Iterator[Callable[..., DetourProcess]]:
    """Run `detour run --headless` as a real process on a free port."""
    yield from detour_processes(tmp_path)


def detour_processes(tmp_path: Path) -> Iterator[Callable[..., DetourProcess]]:
    """detour_process for a fixture of any scope (its files in `tmp_path`): yields the
    starter once, then stops what it started and checks their output."""
    started: list[DetourProcess] = []

    def start(text: str | None = None, *args: str) -> DetourProcess:
        port = free_port()
        command = detour_command("run", "--headless", "--listen", f"127.0.0.1:{port}", *args)
        if text is not None:
            path = tmp_path / f"detour-{len(started)}.toml"
            path.write_text(text)
            command += ["-c", str(path)]
        output_path = tmp_path / f"detour-{len(started)}.log"
        with output_path.open("w") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        proc = DetourProcess(process, ("127.0.0.1", port), output_path)
        started.append(proc)
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a pause
        while "listening on" not in proc.output:
            if process.poll() is not None or time.monotonic() > deadline:
                proc.stop(signal.SIGKILL)
                raise AssertionError(f"detour did not start:\n{proc.output}")
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        proc.stop()
        assert "Traceback" not in proc.output, proc.output
