"""Shared fixtures: origins (HTTP, HTTPS with a test CA, echo, integrity) running in a
background loop, detour engines in-process, and detour as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.config import Config, parse_config
from helper.engine import Engine
from tests.support import origins
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run tests/fuzz with the 'long' hypothesis profile (200,000 examples per property)",
    )


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
        deadline = time.monotonic() + 15
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
