"""`detour run` remembers per network what worked: a second run on the same network starts
from the first run's results (docs/routing.md, Memory), through the real program and its
state directory, not an Engine a test built."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from helper.routing.state import STATE_FILE, network_id, state_dir
from tests.support.peers import free_port

pytestmark = pytest.mark.skipif(
    network_id() == "", reason="this machine has no default route: no network to remember"
)


def config(api_port: int, target_port: int) -> str:
    return f"""
[base]
config = "none"
[api]
listen = "127.0.0.1:{api_port}"
[probe]
interval = "1h"
timeout = "2s"
[[route]]
name = "dead"
chain = "socks5://127.0.0.1:{free_port()}"
[[route]]
name = "working"
chain = "direct"
[[service]]
name = "local"
cidrs = ["127.0.0.0/8"]
probes = ["tcp://127.0.0.1:{target_port}"]
routes = ["dead", "working"]
"""


def route_health(api_port: int) -> dict[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/status", timeout=5) as answer:
        document = json.load(answer)
    (service,) = document["services"]
    return {route["route"]: route for route in service["routes"]}


def wait_for(check, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} never happened")
        time.sleep(0.1)


def test_a_second_run_starts_from_what_the_first_found(detour_process, tmp_path: Path) -> None:
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen(16)
        target_port = target.getsockname()[1]

        api = free_port()
        first = detour_process(config(api, target_port))
        wait_for(lambda: route_health(api).get("working", {}).get("ok") is True, "the first probe")
        wait_for(lambda: (state_dir() / STATE_FILE).exists(), "the state file")
        assert first.stop() == 0

        api = free_port()
        second = detour_process(config(api, target_port))
        wait_for(lambda: "remembered" in second.output, "the memory's log line", 15)
        assert "remembered 2 route results from this network" in second.output, second.output
