"""Real processes and load for the reliability tests.

detour, a `detour relay` and the integrity origin each run as their own subprocess, so a test
can read the peak memory (VmHWM) and the open file descriptors of detour alone, kill an
upstream with SIGKILL, restart a relay on the same port, or start detour with a low
RLIMIT_NOFILE. The load generator runs many sha256-checked exchanges (tests/support/
integrity.py) at once through detour's SOCKS5 port and counts what came back intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.peers import free_port
from tests.support.relay_process import write_relay

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# A bound for a loaded machine, not a pause (start() returns once the ready line is out):
# detour took over 20 s to start on a machine with both cores busy, as the fixtures in
# tests/conftest.py allow for.
START_TIMEOUT = 120.0  # a safety net (an exit is seen at once); an import took 33 s at load 15


@dataclass
class Process:
    name: str
    argv: list[str]
    address: tuple[str, int]
    output_path: Path
    ready: str  # a line fragment the program prints once it accepts connections
    preexec: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of this process's environment
    process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Process:
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                preexec_fn=self.preexec,
            )
        deadline = time.monotonic() + START_TIMEOUT
        seen = len(self.output)
        while self.ready not in self.output[seen:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not start:\n{self.output}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def peak_rss(self) -> int:
        """Bytes: the process's peak resident set (VmHWM)."""
        return _status_field(self.pid, "VmHWM") * 1024

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def nofile_limit(n: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return preexec


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        for process in processes:
            if process.process is None:
                process.start()
        yield
    finally:
        for process in reversed(processes):
            process.stop()


def detour(
    tmp: Path,
    config: str,
    *,
    log_level: str = "info",
    log_format: str = "text",
    nofile: int | None = None,
    loop: str | None = None,
    name: str = "detour",
) -> Process:
    """`detour run --headless` with this config on a free port (not started yet); `loop`
    "asyncio" forces asyncio's own event loop (DETOUR_LOOP), the default uses uvloop."""
    path = tmp / f"{name}.toml"
    path.write_text(config)
    path.chmod(0o600)
    port = free_port()
    argv = [sys.executable, "-m", "helper", "run", "--headless", "-c", str(path)]
    argv += ["--listen", f"{HOST}:{port}", "--log-level", log_level, "--log-format", log_format]
    return Process(
        name,
        argv,
        (HOST, port),
        tmp / f"{name}.log",
        "listening on",
        nofile_limit(nofile) if nofile else None,
        {"DETOUR_LOOP": loop} if loop else {},
    )


def origin(tmp: Path, name: str = "origin", mode: str = "integrity") -> Process:
    """The integrity (or echo) origin, tests/reliability/origin.py, in its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.reliability.origin", HOST, str(port), mode]
    return Process(name, argv, (HOST, port), tmp / f"{name}.log", "origin ready")


@dataclass
class Relay:
    """A `detour relay` serving TLS itself (no CDN in between), and what a front: route
    needs to reach it: the access key and the CA that signed the relay's certificate."""

    process: Process
    access_key: str
    ca_path: Path

    @property
    def chain(self) -> str:
        return "front:" + self.access_key

    @property
    def tls_extra(self) -> str:
        return f'\n[tls]\nextra_ca = ["{self.ca_path}"]\n'

    def restart(self) -> None:
        """Start the relay again on the same port with the same keys."""
        self.process.kill()
        self.process.start()


def relay(tmp: Path) -> Relay:
    port = free_port()
    written = write_relay(
        tmp / "relay.toml",
        ca_dir=tmp / "relay-ca",
        state=tmp / "relay-state",
        name="relay.reliability.test",
        host=HOST,
        port=port,
        client="reliability",
        # the load test's 1,000 at once are one client's
        extra="\n[limits]\nconnections_per_client = 4000\n",
    )
    argv = [sys.executable, "-m", "helper", "relay", "-c", str(written.config)]
    process = Process("relay", argv, (HOST, port), tmp / "relay.log", "relay listening on")
    return Relay(process, written.access_key, written.ca_path)


# --- load -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    connections: int
    size: int
    intact: int = 0
    short: int = 0  # the client received fewer bytes than the server sent
    mismatched: int = 0  # a digest differs (or never came): bytes altered or lost upstream
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        errors = "; ".join(f"{n}x {text}" for text, n in self.errors.most_common(5))
        return (
            f"{self.connections} x {self.size} B each way: {self.intact} intact, "
            f"{self.short} short, {self.mismatched} mismatched, "
            f"{sum(self.errors.values())} errors{': ' + errors if errors else ''} "
            f"in {self.seconds:.1f}s"
        )


async def run_load(
    proxy: tuple[str, int],
    origin: tuple[str, int],
    connections: int,
    size: int,
    *,
    half_close: bool = True,
    timeout: float = 600,
) -> LoadResult:
    """`connections` exchanges at once through the SOCKS5 proxy, `size` bytes each way.

    The client's own work (generating and hashing the data) can hold its event loop for
    seconds: give detour a handshake timeout to match (config_text's 2 s is too short)."""
    result = LoadResult(connections, size)

    async def connect(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await open_socks5(proxy, *origin)
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            result.errors[f"connect: {type(exc).__name__}: {exc}"[:120]] += 1
            return None

    async def exchange(i: int, pair: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        try:
            outcome = await run_integrity(
                *pair, up=size, down=size, seed=2 * i, half_close=half_close
            )
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            result.errors[f"exchange: {type(exc).__name__}: {exc}"[:120]] += 1
            return
        if outcome.ok:
            result.intact += 1
        elif outcome.received < size:
            result.short += 1
        else:
            result.mismatched += 1

    started = time.monotonic()
    async with asyncio.timeout(timeout):
        # All connections open first, then all exchanges run: 1,000 at once, really.
        pairs = await asyncio.gather(*(connect(i) for i in range(connections)))
        await asyncio.gather(*(exchange(i, pair) for i, pair in enumerate(pairs) if pair))
    result.seconds = time.monotonic() - started
    return result


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
