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
    demo = detour_command(
        "demo", "--scenario", "sni-reset", "--network", NETWORK, "--listen", f"127.0.0.1:{port}"
    )
    status_file = tmp_path / "status"
    start_in_tmux(tmux, demo, status_file)
    scenario = load_scenario("sni-reset")
    expected = {}
    for expect in scenario.expectations:
        mark = "✓" if expect.works else "–" if expect.failure == "not_applicable" else "✗"
        expected.setdefault(expect.route, {})[expect.service] = mark
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

    quit_with_q(tmux, status_file)
    assert not listening("127.0.0.1", port)
    assert not listening("127.98.1.10", 443)  # the lab's web.telegram.org


def local_config(route: str) -> str:
    """One route, and one service that is all of loopback (nothing to probe elsewhere)."""
    return (
        '[base]\nconfig = "none"\n[listen]\nmixed = "127.0.0.1:0"\n'
        f'[[route]]\nname = "{route}"\nchain = "direct"\n'
        '[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n'
    )


def wait_for_screen(tmux: list[str], text: str, status_file: Path) -> str:
    deadline = time.monotonic() + 30
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(tmux)
        if text in screen:
            return screen
        if status_file.exists():
            pytest.fail(f"detour ended:\n{screen}")
        time.sleep(0.2)
    pytest.fail(f"{text!r} never showed:\n{screen}")


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
