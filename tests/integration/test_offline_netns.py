"""Offline is not censorship (docs/routing.md "Offline or censored"): detour (a real `detour
run --headless` process) in a network namespace with no route out says "offline" for every
service -- in the status API, /healthz and `detour probe` -- and blames neither DNS nor DPI;
when a veth pair and a default route to a second namespace, where the control target and
the service's address answer, bring the network up, the verdicts flip within seconds,
without waiting for the probe interval (an hour here).

Needs root and iproute2; every namespace and veth pair is removed afterwards, and no packet
leaves the two namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helper.lab.namespaces import Namespaces
from tests.conftest import ROOT
from tests.support.netns import require_root_ip_and_curl, start_detour
from tests.support.peers import terminate

API_PORT = 9080  # the namespace is new: every port is free
CONTROL = "198.18.0.53"  # the control target, on the far namespace's loopback
SERVICE = "198.18.0.80"  # the service's server, the same
LINK = ("10.251.0.1", "10.251.0.2")  # far end, client end of the veth pair

# What a diagnosis must not say when the network is down.
CENSORSHIP_WORDS = ("DNS blocking", "poisoning", "DPI", "black-holed", "dropped", "reset")

# Accepts on port 443 and closes: enough for a TCP probe and a control connect.
ANSWERING = """
import socket
server = socket.create_server(("0.0.0.0", 443), reuse_port=False)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
"""


@dataclass
class Offline:
    net: Namespaces
    client: str
    far: str
    config: Path
    log: Path
    env: dict[str, str]

    def status(self, path: str = "/status") -> tuple[int, str]:
        command = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"]
        command.append(f"http://127.0.0.1:{API_PORT}{path}")
        done = subprocess.run(
            self.net.exec(self.client, *command), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        body, _, code = done.stdout.rpartition("\n")
        return int(code), body

    def document(self) -> dict[str, Any]:
        code, body = self.status()
        assert code == 200, body
        return json.loads(body)

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float):
        """The status document once `check` holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.document()
            if check(document):
                return document
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not {what} within {timeout:.0f}s:\n{json.dumps(document, indent=1)}\n"
                    f"{self.log.read_text()}"
                )
            time.sleep(0.1)

    def link_up(self) -> None:
        """A veth pair to the far namespace and a default route through it."""
        near, far = self.net.veth("dto", self.client, self.far)
        self.net.address(self.far, far, f"{LINK[0]}/30")
        self.net.address(self.client, near, f"{LINK[1]}/30")
        self.net.route(self.client, "default", "via", LINK[0])


def _diagnoses(document: dict[str, Any]) -> list[str]:
    return [route["diagnosis"] for s in document["services"] for route in s["routes"]]


def _offline(document: dict[str, Any]) -> bool:
    diagnoses = _diagnoses(document)
    return (
        document["network"]["state"] == "offline"
        and len(diagnoses) == 2
        and all(d.startswith("offline:") for d in diagnoses)
    )


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Offline]:
    require_root_ip_and_curl()
    config = tmp_path / "detour.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [base]
            config = "none"

            [listen]
            mixed = "127.0.0.1:1080"

            [api]
            listen = "127.0.0.1:{API_PORT}"

            [probe]
            interval = "1h"
            timeout = "2s"
            control_targets = ["{CONTROL}:443"]

            [[route]]
            name = "direct"
            chain = "direct"

            [[service]]
            name = "chat"
            cidrs = ["{SERVICE}/32"]
            probes = ["tcp://{SERVICE}:443"]

            [[service]]
            name = "web"
            domains = ["web.telegram.org"]
            probes = ["tls://web.telegram.org:443"]
            """
        )
    )
    log = tmp_path / "detour.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DETOUR_STATE_DIR": str(tmp_path)}
    processes: list[subprocess.Popen[str]] = []
    with Namespaces() as net:
        client = net.namespace("dtoffc")
        far = net.namespace("dtofff")
        net.run(far, "ip", "addr", "add", f"{CONTROL}/32", "dev", "lo")
        net.run(far, "ip", "addr", "add", f"{SERVICE}/32", "dev", "lo")
        try:
            answering = subprocess.Popen(
                net.exec(far, sys.executable, "-c", ANSWERING),
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(answering)
            assert answering.stdout is not None and answering.stdout.readline() == "ready\n"
            processes.append(start_detour(net, client, config, log, env))
            yield Offline(net, client, far, config, log, env)
        finally:
            for process in reversed(processes):
                terminate(process)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not {client, far} & {line.split()[0] for line in left.splitlines() if line}, left
    assert "Traceback" not in log.read_text(), log.read_text()


def test_offline_is_not_censored_and_the_network_coming_back_is_seen(offline: Offline) -> None:
    document = offline.wait_for("offline", _offline, timeout=20)
    assert document["network"]["reason"].startswith("no route")
    for diagnosis in _diagnoses(document):
        assert not any(word in diagnosis for word in CENSORSHIP_WORDS), diagnosis
    code, body = offline.status("/healthz")
    assert code == 503 and body.startswith("offline:")

    # `detour probe` says the same, with its own exit code.
    probe = subprocess.run(
        offline.net.exec(
            offline.client,
            *(sys.executable, "-m", "helper", "-c", str(offline.config), "probe", "--json"),
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=offline.env,
        timeout=60,
    )
    assert probe.returncode == 3, probe.stderr
    report = json.loads(probe.stdout)
    assert report["network"]["state"] == "offline"
    assert [r["diagnosis"][:8] for s in report["services"] for r in s["routes"]] == [
        "offline:",
        "offline:",
    ]

    # The network comes back: no probe is due for an hour, yet the verdicts flip at once.
    offline.link_up()
    came_back = time.monotonic()
    document = offline.wait_for(
        "online, chat working and web probed again",
        lambda d: (
            d["network"]["state"] == "online"
            and next(s for s in d["services"] if s["name"] == "chat")["reachable"]
            and not any(diagnosis.startswith("offline:") for diagnosis in _diagnoses(d))
        ),
        timeout=15,
    )
    assert time.monotonic() - came_back < 15
    # web's name does not resolve here (no resolver answers in these namespaces): now that
    # the network is up, that is what the diagnosis says.
    web = next(s for s in document["services"] if s["name"] == "web")
    assert not web["reachable"] and web["routes"][0]["op"] == "resolve"
    code, body = offline.status("/healthz")
    assert code == 200, body
    assert "the network is back" in offline.log.read_text()
