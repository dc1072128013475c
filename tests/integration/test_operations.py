"""Running detour headless as a service: SIGHUP reloads the config without dropping
established connections, SIGTERM drains them, and the exit codes scripts rely on. A real
detour process, real clients and real upstream SOCKS proxies (microsocks).

The transfers are 16 MiB each way, sha256-checked (64 MiB with DETOUR_FULL_LOAD=1, 4 MiB in
make test: tests/support/sizes.py; DETOUR_TEST_OPS_SIZE sets another size in bytes). Each is
held half-way by its client while the signal is delivered, so it is in flight for certain,
whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.conftest import ROOT, detour_command
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.integrity import CHUNK, seeded_chunks
from tests.support.sizes import transfer_size

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SIZE = int(os.environ.get("DETOUR_TEST_OPS_SIZE", transfer_size(16 << 20)))
HALFWAY = min(4 * CHUNK, SIZE // 2)  # where the client holds the transfer
SEED = 11


def ops_config(routes: dict[str, str], listen: str = "127.0.0.1:0") -> str:
    """Every loopback destination belongs to one service that uses the routes in the given
    order (a long stagger: the first route is the one that carries a connection)."""
    parts = [
        '[base]\nconfig = "none"\n',
        f'[listen]\nmixed = "{listen}"\nhandshake_timeout = "5s"\n',
        '[probe]\nstagger = "20s"\n',
    ]
    for name, chain in routes.items():
        parts.append(f'[[route]]\nname = "{name}"\nchain = "{chain}"\n')
    parts.append('[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n')
    return "\n".join(parts)


class Detour:
    """`detour run --headless -c FILE` as a real process; the file can be rewritten."""

    def __init__(
        self, tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.config = tmp_path / "detour.toml"
        self.config.write_text(text)
        self.log_path = tmp_path / "detour.log"
        with self.log_path.open("w") as out:
            self.process = subprocess.Popen(
                detour_command("run", "--headless", "-c", str(self.config), *args),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        try:
            # A bound for a loaded machine, not a pause (a start took more than 20 s there).
            self.wait_log_sync("listening on", timeout=120)
        except AssertionError:
            self.process.kill()  # not left running behind the failed test
            self.process.wait()
            raise
        # Port 0 in the config: the system picks a free port, and the log says which.
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.output)
        assert found, self.output
        self.address = ("127.0.0.1", int(found.group(1)))

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_log_sync(self, text: str, count: int = 1, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from detour:\n{self.output}")
            time.sleep(0.05)

    async def wait_log(self, text: str, count: int = 1, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from detour:\n{self.output}")
            await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def exit_code(self, timeout: float = 60) -> int:
        """Wait for the process to end (the timeout is a safety net, not a measurement)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"detour did not exit:\n{self.output}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_detour(tmp_path: Path):
    started: list[Detour] = []

    def start(text: str, *args: str, env: dict[str, str] | None = None) -> Detour:
        detour = Detour(tmp_path, text, *args, env=env)
        started.append(detour)
        return detour

    yield start
    for detour in started:
        detour.kill()
        assert "Traceback" not in detour.output, detour.output


@dataclass
class Transfer:
    received: int
    ok_down: bool  # what the client received is what the server sent
    ok_up: bool  # the server's digest matches what the client sent
    error: BaseException | None = None  # how the connection ended, if not cleanly

    @property
    def ok(self) -> bool:
        return self.ok_down and self.ok_up and self.error is None


async def held_transfer(
    proxy: tuple[str, int], port: int, size: int, halfway: asyncio.Event, go_on: asyncio.Event
) -> Transfer:
    """The integrity exchange (tests/support/integrity.py) with a known length both ways,
    through detour's SOCKS5 port; both directions pause at HALFWAY (setting `halfway`) until
    `go_on` is set."""
    reader, writer = await open_socks5(proxy, "127.0.0.1", port)
    writer.write(struct.pack("!QQQ", size, SEED + 1, size))
    sent = hashlib.sha256()
    held = [False, False]

    async def hold(side: int) -> None:
        held[side] = True
        if all(held):
            halfway.set()
        await go_on.wait()

    async def send() -> None:
        done = 0
        for chunk in seeded_chunks(size, SEED):
            if done == HALFWAY:
                await hold(0)
            sent.update(chunk)
            writer.write(chunk)
            await writer.drain()
            done += len(chunk)
        if done <= HALFWAY:
            await hold(0)

    async def receive() -> tuple[int, bool, bytes]:
        expected, digest = hashlib.sha256(), hashlib.sha256()
        for chunk in seeded_chunks(size, SEED + 1):
            expected.update(chunk)
        got = 0
        while got < size:
            if got >= HALFWAY and not held[1]:
                await hold(1)
            data = await reader.read(min(CHUNK, size - got, max(HALFWAY - got, 0) or CHUNK))
            if not data:
                break
            digest.update(data)
            got += len(data)
        tail = b""
        while data := await reader.read(64):
            tail += data
        return got, digest.digest() == expected.digest(), tail

    sender = asyncio.ensure_future(send())
    try:
        got, intact, tail = await receive()
    except (ConnectionError, OSError) as exc:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
        if not held[1]:
            halfway.set()
        return Transfer(0, False, False, exc)
    await asyncio.gather(sender, return_exceptions=True)
    writer.close()
    return Transfer(got, got == size and intact, tail == sent.digest())


async def echo_through(proxy: tuple[str, int], port: int) -> None:
    reader, writer = await open_socks5(proxy, "127.0.0.1", port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    writer.close()


# --- reload -------------------------------------------------------------------------------


async def test_sighup_moves_new_connections_and_keeps_the_transfer_intact(
    start_detour, integrity_origin, echo_origin
) -> None:
    with peers.microsocks() as first, peers.microsocks() as second:
        detour = start_detour(ops_config({"a": first.url, "b": second.url}))
        halfway, go_on = asyncio.Event(), asyncio.Event()
        transfer = asyncio.ensure_future(
            held_transfer(detour.address, integrity_origin.port, SIZE, halfway, go_on)
        )
        await asyncio.wait_for(halfway.wait(), 60)
        assert f"connected to 127.0.0.1:{integrity_origin.port}" in first.logs()

        # The same routes, the other way round.
        detour.config.write_text(ops_config({"b": second.url, "a": first.url}))
        detour.signal(signal.SIGHUP)
        await detour.wait_log("reloaded")
        assert "route order: b, a" in detour.output
        assert "new connections use routes: b, a" in detour.output

        await echo_through(detour.address, echo_origin.port)
        assert f"connected to 127.0.0.1:{echo_origin.port}" in second.logs()
        assert f"connected to 127.0.0.1:{echo_origin.port}" not in first.logs()

        go_on.set()
        result = await asyncio.wait_for(transfer, 300)
        assert result.ok, (result, detour.output)
        # The request header (24 bytes) up, the server's digest (32) down, besides the data.
        await detour.wait_log(
            f"127.0.0.1:{integrity_origin.port} via a: {SIZE + 24} bytes up, {SIZE + 32} down"
        )
        await detour.wait_log(f"127.0.0.1:{echo_origin.port} via b")
        detour.signal(signal.SIGTERM)
        assert await detour.exit_code() == 0


async def test_sighup_with_a_bad_config_keeps_the_old_one(start_detour, echo_origin) -> None:
    with peers.microsocks() as first, peers.microsocks() as second:
        detour = start_detour(ops_config({"a": first.url, "b": second.url}))
        detour.config.write_text(
            ops_config({"b": second.url, "a": "sock5://127.0.0.1:1"})
            + '\n[default]\npolicy = "nope"\n'
        )
        detour.signal(signal.SIGHUP)
        await detour.wait_log("still running with the previous config")
        assert "route[1].chain: unknown layer 'sock5'" in detour.output
        assert "default.policy: no route named 'nope'" in detour.output
        await echo_through(detour.address, echo_origin.port)  # still serving, via a
        assert f"connected to 127.0.0.1:{echo_origin.port}" in first.logs()
        assert "connected to" not in second.logs()
        assert detour.process.poll() is None

        # A file that cannot be read at all changes nothing either; a good one then applies.
        detour.config.unlink()
        detour.signal(signal.SIGHUP)
        await detour.wait_log("still running with the previous config", count=2)
        assert "no such file" in detour.output
        detour.config.write_text(ops_config({"b": second.url, "a": first.url}))
        detour.signal(signal.SIGHUP)
        await detour.wait_log("reloaded")
        detour.signal(signal.SIGTERM)
        assert await detour.exit_code() == 0


async def test_sighup_reports_what_needs_a_restart(start_detour, echo_origin) -> None:
    detour = start_detour(ops_config({"direct": "direct"}))
    changed = ops_config({"direct": "direct", "frag": "tlsfrag:sni"}, listen="127.0.0.1:1")
    detour.config.write_text(changed)
    detour.signal(signal.SIGHUP)
    await detour.wait_log("needs a restart")
    assert "listen.mixed changed but needs a restart" in detour.output
    assert "routes added: frag" in detour.output
    await echo_through(detour.address, echo_origin.port)  # the old address still serves
    detour.signal(signal.SIGTERM)
    assert await detour.exit_code() == 0


# --- drain --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_sigterm_lets_the_transfer_finish_then_exits_0(
    start_detour, integrity_origin, sig: int
) -> None:
    detour = start_detour(ops_config({"direct": "direct"}), "--drain-timeout", "120")
    halfway, go_on = asyncio.Event(), asyncio.Event()
    transfer = asyncio.ensure_future(
        held_transfer(detour.address, integrity_origin.port, SIZE, halfway, go_on)
    )
    await asyncio.wait_for(halfway.wait(), 60)
    detour.signal(sig)
    await detour.wait_log("shutting down: 1 connection(s) open, waiting up to 120s")
    # Draining: no new connections are accepted.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*detour.address)
    go_on.set()
    result = await asyncio.wait_for(transfer, 300)
    assert result.ok, (result, detour.output)
    assert await detour.exit_code() == 0
    assert "closing" not in detour.output


async def test_a_transfer_longer_than_the_deadline_is_cut_visibly(
    start_detour, integrity_origin
) -> None:
    detour = start_detour(ops_config({"direct": "direct"}), "--drain-timeout", "1")
    halfway, go_on = asyncio.Event(), asyncio.Event()
    transfer = asyncio.ensure_future(
        held_transfer(detour.address, integrity_origin.port, SIZE, halfway, go_on)
    )
    await asyncio.wait_for(halfway.wait(), 60)
    detour.signal(signal.SIGTERM)
    assert await detour.exit_code() == 0
    assert "drain deadline passed: closing 1 connection(s)" in detour.output
    go_on.set()  # the client goes on and finds its connection cut
    result = await asyncio.wait_for(transfer, 60)
    assert not result.ok
    assert isinstance(result.error, ConnectionResetError), result


async def test_a_second_sigterm_stops_at_once(start_detour, integrity_origin) -> None:
    detour = start_detour(ops_config({"direct": "direct"}), "--drain-timeout", "3600")
    halfway, go_on = asyncio.Event(), asyncio.Event()
    transfer = asyncio.ensure_future(
        held_transfer(detour.address, integrity_origin.port, SIZE, halfway, go_on)
    )
    await asyncio.wait_for(halfway.wait(), 60)
    detour.signal(signal.SIGTERM)
    await detour.wait_log("shutting down: 1 connection(s) open")
    detour.signal(signal.SIGTERM)
    assert await detour.exit_code() == 0
    assert "stopping at once: closing 1 connection(s)" in detour.output
    go_on.set()
    result = await asyncio.wait_for(transfer, 60)
    assert isinstance(result.error, ConnectionResetError), result


# --- exit codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_bad_drain_timeout_is_a_usage_error(value: str) -> None:
    result = subprocess.run(
        detour_command("run", "--headless", "--drain-timeout", value),
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "--drain-timeout" in result.stderr


@pytest.mark.timeout(300)  # room for the bounds of its waits on a loaded machine
def test_sighup_without_a_config_file_keeps_running(tmp_path: Path) -> None:
    # The built-in config probes real services: run detour where only loopback exists.
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) for a network namespace")
    log_path = tmp_path / "out.log"
    process = None
    with Namespaces() as net:
        netns = net.namespace("dtops")
        try:
            with log_path.open("w") as out:
                process = subprocess.Popen(
                    net.exec(netns, *detour_command("run", "--headless")),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            # The built-in listen address, 127.0.0.1:1080, is free in a namespace of its own.
            # SIGHUP only once detour handles it (the default action would end the process).
            _wait_for_text(log_path, "listening on", process)
            process.send_signal(signal.SIGHUP)  # ip netns exec replaces itself with detour
            _wait_for_text(log_path, "no file to reload", process)
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, log_path.read_text()
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _wait_for_text(path: Path, text: str, process: subprocess.Popen, bound: float = 60) -> None:
    """Until `text` is in the log: the bound is for a loaded machine, not a pause."""
    deadline = time.monotonic() + bound
    while text not in path.read_text():
        assert process.poll() is None, f"detour exited ({process.returncode}):\n{path.read_text()}"
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{path.read_text()}"
        time.sleep(0.05)


# --- systemd ------------------------------------------------------------------------------


async def test_systemd_is_told_ready_reloading_and_stopping(start_detour) -> None:
    """Type=notify: READY=1 once listening, RELOADING=1 then READY=1 around a reload,
    STOPPING=1 at the drain (sd_notify datagrams to $NOTIFY_SOCKET)."""
    directory = Path(tempfile.mkdtemp(prefix="dtn"))  # short: a socket path has 108 bytes
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(directory / "notify"))
            sock.settimeout(20)
            env = {"NOTIFY_SOCKET": str(directory / "notify")}
            detour = start_detour(ops_config({"direct": "direct"}), env=env)
            assert sock.recv(4096) == b"READY=1"
            detour.signal(signal.SIGHUP)
            reloading = sock.recv(4096).decode().split("\n")
            assert reloading[0] == "RELOADING=1"
            assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1][15:]) > 0
            assert sock.recv(4096) == b"READY=1"
            assert "reloaded" in detour.output
            detour.signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert await detour.exit_code() == 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- logs ---------------------------------------------------------------------------------


async def test_json_logs_are_one_object_a_line_with_event_fields(start_detour, echo_origin) -> None:
    detour = start_detour(ops_config({"direct": "direct"}), "--log-format", "json")
    await echo_through(detour.address, echo_origin.port)
    await detour.wait_log('"connection_closed"')
    detour.config.write_text(ops_config({"direct": "direct", "frag": "tlsfrag:sni"}))
    detour.signal(signal.SIGHUP)
    await detour.wait_log('"reloaded"')
    detour.config.write_text("[[route]]\nname = 'x'\n")
    detour.signal(signal.SIGHUP)
    await detour.wait_log('"reload_failed"')
    detour.signal(signal.SIGTERM)
    assert await detour.exit_code() == 0

    entries = [json.loads(line) for line in detour.output.splitlines()]  # every line
    for entry in entries:
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    by_event = {entry.get("event"): entry for entry in entries}
    closed = by_event["connection_closed"]
    assert closed["route"] == "direct" and closed["service"] == "local"
    assert closed["target"] == f"127.0.0.1:{echo_origin.port}"
    assert (closed["up"], closed["down"], closed["end"]) == (4, 4, "closed")
    assert by_event["reloaded"]["changed"] == ["routes added: frag"]
    assert by_event["reload_failed"]["level"] == "error"
    assert by_event["reload_failed"]["problems"] == ["route[0].chain: is required"]
