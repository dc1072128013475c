"""`detour demo` in a real terminal (tmux): the UI comes up, shows each service's fate through
each route as the scenario says, and `q` ends it with nothing left listening.

Each test waits for the screen to show what it asserts (and fails with the last screen when it
never does), never for a fixed time."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helper.lab.scenario import load_scenario
from tests.conftest import ROOT
from tests.support.networks import free_network, lab_address
from tests.support.peers import free_port, require_peer

SERVICES = ("telegram", "whatsapp", "signal")
# A safety net for a busy machine (the demo probes every route through a lab first), not a
# measurement.
SCREEN_TIMEOUT = 120.0
# `detour demo` with probe and route timeouts for a busy machine. The demo's lab, engine and
# UI share one event loop, and the lab's 3 s probes time out when both cores are busy
# elsewhere: a route then shows a timeout's failure where the scenario says "works" or
# "reset". The scenario played here has no verdict that needs a timeout, so the
# test gives them 30 s, as tests/tui/test_lab.py does; the rest is `detour demo` unchanged.
PATIENT_DEMO = """
import re, sys
from helper.cli import main
from helper.lab.lab import Lab
written = Lab.helper_config
def patient(self, listen="127.0.0.1:1080"):
    text = written(self, listen)
    assert 'timeout = "3s"' in text, "the lab's probe timeout moved"
    text = text.replace('timeout = "3s"', 'timeout = "30s"')
    return re.sub(r'^(chain = ".*")$', r'\\1\\ntimeout = "30s"', text, flags=re.MULTILINE)
Lab.helper_config = patient
raise SystemExit(main(["demo", *sys.argv[1:]]))
"""


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of this test's own (its own socket), always killed afterwards, and
    with it every process its panes started, so that a detour that failed to end with its
    terminal (test_hangup.py) does not outlive the test."""
    binary = require_peer("tmux", "tmux")
    command = [binary, "-L", f"detour-test-{os.getpid()}", "-f", "/dev/null"]
    try:
        yield command
    finally:
        panes = subprocess.run(
            [*command, "list-panes", "-a", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        started = [pid for line in panes.stdout.split() for pid in descendants(int(line))]
        subprocess.run([*command, "kill-server"], capture_output=True, timeout=10)
        end_processes(started)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])  # the field after the state
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def end_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM to each of `pids`, SIGKILL to those still there after `grace` seconds.
    (A pid gone and reused meanwhile is not at risk in a test's few seconds.)"""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if running(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def capture(tmux: list[str]) -> str:
    result = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "demo"], capture_output=True, text=True, timeout=10
    )
    return result.stdout


def marks(screen: str, route: str) -> list[str]:
    """The ✓/✗ (or – where the route cannot carry the service) of each service on a route's
    row of the matrix, in column order."""
    row = next((line for line in screen.splitlines() if line.startswith(f"│ {route} ")), "")
    return [c for c in row if c in "✓✗–"]


def start_in_tmux(tmux: list[str], command: list[str], status_file: Path) -> None:
    """Run `command` in a 120x40 tmux pane named "demo". The shell writes down how it ended
    (tmux itself may mark the pane dead before it knows the exit status); the pane stays,
    with detour's last words on it."""
    shell = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.join(command)}; "
        f"echo $? > {shlex.quote(str(status_file))}"
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "demo", "-x", "120", "-y", "40", shell],
        check=True,
        timeout=10,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    subprocess.run([*tmux, "set-option", "-t", "demo", "remain-on-exit", "on"], timeout=10)


def quit_with_q(tmux: list[str], status_file: Path) -> str:
    """Press q; the pane's last screen once detour has ended (with exit status 0)."""
    subprocess.run([*tmux, "send-keys", "-t", "demo", "q"], check=True, timeout=10)
    deadline = time.monotonic() + 15
    while not status_file.exists() or not status_file.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"q did not end detour:\n{capture(tmux)}")
        time.sleep(0.1)
    last = capture(tmux)
    assert status_file.read_text().strip() == "0", last
    assert "Traceback" not in last and "Error" not in last, last
    return last


def test_demo_in_a_real_terminal(tmux: list[str], tmp_path: Path) -> None:
    port = free_port()
    network = free_network()
    demo = [sys.executable, "-c", PATIENT_DEMO]
    demo += ["--scenario", "sni-reset", "--network", network, "--listen", f"127.0.0.1:{port}"]
    status_file = tmp_path / "status"
    start_in_tmux(tmux, demo, status_file)
    scenario = load_scenario("sni-reset")
    expected = {}
    for expect in scenario.expectations:
        mark = "✓" if expect.works else "–" if expect.failure == "not_applicable" else "✗"
        expected.setdefault(expect.route, {})[expect.service] = mark
    routes = list(expected)

    def as_the_scenario_says(screen: str) -> None:
        assert "probed" in screen, screen  # every probe of the first round has finished
        header = next((line for line in screen.splitlines() if "telegram" in line), "")
        assert all(service in header for service in SERVICES), screen
        order = sorted(SERVICES, key=header.index)
        for route in routes:
            assert marks(screen, route) == [expected[route][s] for s in order], (route, screen)
        assert screen.count("✓ via tls-fragment") == 3, screen
        assert f"proxy 127.0.0.1:{port}" in screen

    screen = wait_for_screen(tmux, as_the_scenario_says, status_file)
    assert "Traceback" not in screen

    quit_with_q(tmux, status_file)
    assert not listening("127.0.0.1", port)
    assert not listening(lab_address(network, "telegram-web"), 443)


def local_config(route: str) -> str:
    """One route, and one service that is all of loopback (nothing to probe elsewhere)."""
    return (
        '[base]\nconfig = "none"\n[listen]\nmixed = "127.0.0.1:0"\n'
        f'[[route]]\nname = "{route}"\nchain = "direct"\n'
        '[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n'
    )


def showing(text: str) -> Callable[[str], None]:
    def check(screen: str) -> None:
        assert text in screen, f"{text!r} not on the screen:\n{screen}"

    return check


def wait_for_screen(tmux: list[str], check: Callable[[str], None], status_file: Path) -> str:
    """The pane's screen once `check` (plain asserts) passes on it; its last failure if it
    never does, or detour's last screen if it ended."""
    deadline = time.monotonic() + SCREEN_TIMEOUT
    while True:
        screen = capture(tmux)
        try:
            check(screen)
        except AssertionError:
            if status_file.exists():
                status = status_file.read_text().strip()
                pytest.fail(f"detour ended (exit status {status or 'not yet written'}):\n{screen}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return screen


def detour_pid(config: str) -> int:
    """The detour process started with `config` (not the shell around it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"helper" in argv and config.encode() in argv and b"-m" in argv:
            return int(entry.name)
    pytest.fail(f"no detour process for {config}")
