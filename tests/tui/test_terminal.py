"""`detour demo` in a real terminal (tmux): the UI comes up, shows each service's fate through
each route as the scenario says, and `q` ends it with nothing left listening."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helper.lab.scenario import load_scenario
from tests.conftest import ROOT, detour_command
from tests.support.peers import free_port, require_peer

NETWORK = "127.98.0.0/16"
SERVICES = ("telegram", "whatsapp", "signal")


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of this test's own (its own socket), always killed afterwards."""
    binary = require_peer("tmux", "tmux")
    command = [binary, "-L", f"detour-test-{os.getpid()}", "-f", "/dev/null"]
    try:
        yield command
    finally:
        subprocess.run([*command, "kill-server"], capture_output=True, timeout=10)


def capture(tmux: list[str]) -> str:
    result = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "demo"], capture_output=True, text=True, timeout=10
    )
    return result.stdout


def marks(screen: str, route: str) -> list[str]:
    """The ✓/✗ of each service on a route's row of the matrix, in column order."""
    row = next((line for line in screen.splitlines() if line.startswith(f"│ {route} ")), "")
    return [c for c in row if c in "✓✗"]


def test_demo_in_a_real_terminal(tmux: list[str], tmp_path: Path) -> None:
    port = free_port()
    demo = detour_command(
        "demo", "--scenario", "sni-reset", "--network", NETWORK, "--listen", f"127.0.0.1:{port}"
    )
    # The shell writes down how detour ended (tmux itself may mark the pane dead before it
    # knows the exit status); the pane stays, with detour's last words on it.
    status_file = tmp_path / "status"
    shell = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.join(demo)}; "
        f"echo $? > {shlex.quote(str(status_file))}"
    )
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "demo", "-x", "120", "-y", "40", shell],
        check=True,
        timeout=10,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    subprocess.run([*tmux, "set-option", "-t", "demo", "remain-on-exit", "on"], timeout=10)
    scenario = load_scenario("sni-reset")
    expected = {}
    for expect in scenario.expectations:
        expected.setdefault(expect.route, {})[expect.service] = "✓" if expect.works else "✗"
    routes = list(expected)

    deadline = time.monotonic() + 30
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(tmux)
        if all(len(marks(screen, r)) == len(SERVICES) for r in routes) and "probed" in screen:
            break
        if status_file.exists():
            pytest.fail(f"the demo ended:\n{screen}")
        time.sleep(0.2)
    else:
        pytest.fail(f"the matrix never filled in:\n{screen}")

    header = next(line for line in screen.splitlines() if "telegram" in line)
    order = sorted(SERVICES, key=header.index)
    for route in routes:
        assert marks(screen, route) == [expected[route][s] for s in order], (route, screen)
    assert screen.count("✓ via tls-fragment") == 3, screen
    assert f"proxy 127.0.0.1:{port}" in screen
    assert "Traceback" not in screen

    subprocess.run([*tmux, "send-keys", "-t", "demo", "q"], check=True, timeout=10)
    deadline = time.monotonic() + 15
    while not status_file.exists() or not status_file.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"q did not end the demo:\n{capture(tmux)}")
        time.sleep(0.1)
    last = capture(tmux)
    assert status_file.read_text().strip() == "0", last
    assert "Traceback" not in last and "Error" not in last, last
    assert not listening("127.0.0.1", port)
    assert not listening("127.98.1.10", 443)  # the lab's web.telegram.org
