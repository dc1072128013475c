"""The status API as a router serves it: detour (a real `detour run --headless` process) in a
network namespace of its own, listening on every address, asked from the other end of a veth
pair -- a client that is not on loopback, so the bearer token is required, except for the
`public` PAC -- and from inside the namespace over loopback, where it is not. The PAC names
the address each request came in on. Needs root and iproute2; the namespace and veth pair
are removed afterwards."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.conftest import ROOT
from tests.support.peers import require_peer, skip_or_fail, terminate

TOKEN = "lan-token-" + secrets.token_hex(12)
MIXED_PORT, API_PORT = 1080, 9080  # the namespace is new: every port is free


@dataclass
class Router:
    namespace: str
    address: str  # the namespace's end of the veth pair
    process: subprocess.Popen[str]
    log: Path

    def curl(self, path: str, *, token: str | None = None, inside: bool = False) -> tuple[int, str]:
        """GET path, from the root namespace over the veth pair or from inside over loopback."""
        host = "127.0.0.1" if inside else self.address
        command = ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"]
        if token is not None:
            command += ["-H", f"Authorization: Bearer {token}"]
        command.append(f"http://{host}:{API_PORT}{path}")
        if inside:
            command = ["ip", "netns", "exec", self.namespace, *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        body, _, status = result.stdout.rpartition("\n")
        return int(status), body


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    require_peer("ip", "iproute2")
    require_peer("curl", "curl")
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")
    third = secrets.randbelow(200) + 20
    fourth = secrets.randbelow(60) * 4
    root_address, address = f"169.254.{third}.{fourth + 1}", f"169.254.{third}.{fourth + 2}"
    config = tmp_path / "router.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [base]
            config = "none"

            [listen]
            mixed = "0.0.0.0:{MIXED_PORT}"
            allow = ["169.254.0.0/16", "127.0.0.0/8"]

            [api]
            listen = "0.0.0.0:{API_PORT}"
            token = "{TOKEN}"
            public = ["/proxy.pac"]

            [[route]]
            name = "direct"
            chain = "direct"

            [[service]]
            name = "telegram"
            domains = ["telegram.org"]
            cidrs = ["149.154.160.0/20"]
            """
        )
    )
    log = tmp_path / "detour.log"
    process = None
    with Namespaces() as net:
        namespace = net.namespace("dtapi")
        outer, inner = net.veth("dta", None, namespace)
        net.address(None, outer, f"{root_address}/30")
        net.address(namespace, inner, f"{address}/30")
        detour = [sys.executable, "-m", "helper", "run", "--headless", "-c", str(config)]
        try:
            with log.open("w") as out:
                process = subprocess.Popen(
                    net.exec(namespace, *detour),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "DETOUR_STATE_DIR": str(tmp_path)},
                )
            deadline = time.monotonic() + 20
            while "listening on" not in log.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"detour did not start:\n{log.read_text()}")
                time.sleep(0.05)
            yield Router(namespace, address, process, log)
        finally:
            if process is not None:
                terminate(process)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_lan_clients_need_the_token_loopback_clients_do_not(router: Router) -> None:
    for path in ("/status", "/metrics", "/healthz"):
        status, body = router.curl(path)
        assert status == 401, path
        assert TOKEN not in body
        assert router.curl(path, token="not-the-token-but-as-long")[0] == 401
        assert router.curl(path, token=TOKEN)[0] == 200, path
        assert router.curl(path, inside=True)[0] == 200, path
    assert router.curl("/nothing", token=TOKEN)[0] == 404
    # `public` endpoints are served to anyone: a browser fetching its PAC sends no token
    assert router.curl("/proxy.pac")[0] == 200
    assert router.curl("/proxy.pac", token="not-the-token-but-as-long")[0] == 200


def test_the_pac_names_the_address_the_request_came_in_on(router: Router) -> None:
    status, pac = router.curl("/proxy.pac")
    assert status == 200
    proxy = f"{router.address}:{MIXED_PORT}"
    assert f'var DETOUR = "SOCKS5 {proxy}; SOCKS {proxy}";' in pac
    status, pac = router.curl("/proxy.pac", inside=True)
    proxy = f"127.0.0.1:{MIXED_PORT}"
    assert f'var DETOUR = "SOCKS5 {proxy}; SOCKS {proxy}";' in pac
