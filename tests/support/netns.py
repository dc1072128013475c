"""A phone behind a router running detour, in network namespaces (tests/router/): the
service's servers, detour on the router and a script on the phone, each a process of its
own in its namespace (root, `ip` and `nft`).

The namespaces and addresses are the test's (helper/lab/namespaces.py's `Namespaces`); this
starts what runs in them, waits for each to be ready and stops them all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.peers import require_peer, skip_or_fail, terminate

ROOT = Path(__file__).resolve().parents[2]

# The phone's STUN and echo client, for a phone script to call: `stun(s, host)` prints what
# the STUN server at host:3478 sees of the phone ("HOST sees ADDRESS"), asking up to three
# times; `echo(s, host)` sends datagrams of 1, 600 and 1,400 bytes to host:7000 and checks
# each comes back whole from there ("echo ok").
STUN_CLIENT = """
import socket, os
from transports.stun import binding_request, parse_message
def udp_socket(family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(3)
    return s
def stun(s, host):
    request, tid = binding_request()
    for _ in range(3):
        s.sendto(request, (host, 3478))
        try:
            data, source = s.recvfrom(2048)
            break
        except socket.timeout:
            continue
    answer = parse_message(data)
    assert answer.transaction == tid and source[:2] == (host, 3478), (answer, source)
    print(host, "sees", answer.mapped.host, flush=True)
def echo(s, host):
    for size in (1, 600, 1400):
        payload = os.urandom(size)
        s.sendto(payload, (host, 7000))
        data, source = s.recvfrom(2048)
        assert data == payload and source[:2] == (host, 7000), (len(data), source)
    print("echo ok", flush=True)
"""


def require_namespaces() -> None:
    """Skip unless this can make namespaces and load nftables rules."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, TPROXY)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def start_in(namespace: str, *argv: str, **kwargs) -> subprocess.Popen:
    """`argv` started in the namespace, from this checkout (unbuffered output)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
        **kwargs,
    )


def wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float = 30) -> None:
    """Until the process's output file holds `text`; an AssertionError with the output if the
    process ends first (`timeout`: a bound for a loaded machine, not a pause)."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {text!r}:\n{path.read_text()}")
        time.sleep(0.05)


def run_phone(
    tmp_path: Path,
    names: tuple[str, str, str],
    scripts: tuple[str, Path, str],
    detour_ready: tuple[str, ...] = ("transparent UDP on",),
) -> list[str]:
    """The service's servers (a script that prints "ready"), then detour on the router (with
    the config file, until its log holds each of `detour_ready`), then the phone's script in
    the phone namespace: the phone's output lines. Everything started is stopped; the phone
    must succeed, and detour's log (tmp_path/detour.log) must hold no traceback."""
    phone, router, service = names
    servers_script, config, phone_script = scripts
    processes: list[subprocess.Popen] = []
    detour_log = tmp_path / "detour.log"
    try:
        servers_log = tmp_path / "servers.log"
        with servers_log.open("w") as out:
            processes.append(
                start_in(service, sys.executable, "-c", servers_script, stdout=out, stderr=out)
            )
        wait_for_line(servers_log, "ready", processes[-1])
        with detour_log.open("w") as out:
            detour = start_in(
                router,
                sys.executable, "-m", "helper", "run", "--headless", "-c", str(config),
                stdout=out, stderr=out,
            )  # fmt: skip
        processes.append(detour)
        for line in detour_ready:
            wait_for_line(detour_log, line, processes[-1])
        result = subprocess.run(
            ["ip", "netns", "exec", phone, sys.executable, "-c", phone_script],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr + detour_log.read_text()
    finally:
        for process in processes:
            terminate(process)
    assert "Traceback" not in detour_log.read_text(), detour_log.read_text()
    return result.stdout.splitlines()


def require_root_ip_and_curl() -> None:
    """Skip (or fail, where peers are required) unless `ip` and `curl` are here and this
    runs as root (network namespaces)."""
    require_peer("ip", "iproute2")
    require_peer("curl", "curl")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")


def start_detour(
    net: Namespaces, namespace: str, config: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """`detour run --headless -c CONFIG` in the namespace, its output in `log`; returns once
    it is listening (an AssertionError with its log if it ends first or takes a minute)."""
    detour = [sys.executable, "-m", "helper", "run", "--headless", "-c", str(config)]
    with log.open("w") as out:
        process = subprocess.Popen(
            net.exec(namespace, *detour),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a pause
    while "listening on" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            terminate(process)
            raise AssertionError(f"detour did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process
