"""The status API as a router serves it: detour (a real `detour run --headless` process) in a
network namespace of its own, listening on every address, asked from the other end of a veth
pair -- a client that is not on loopback, so the bearer token is required, except for the
`public` PAC -- and from inside the namespace over loopback, where it is not. The PAC names
the address each request came in on. Needs root and iproute2; the namespace and veth pair
are removed afterwards."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.netns import require_root_ip_and_curl, start_detour
from tests.support.peers import terminate

TOKEN = "lan-token-" + secrets.token_hex(12)
MIXED_PORT, API_PORT = 1080, 9080  # the namespace is new: every port is free
API_CONNECTIONS_PER_CLIENT = 8  # helper/api.py


@dataclass
class Router:
    namespace: str
    address: str  # the namespace's end of the veth pair
    process: subprocess.Popen[str]
    log: Path
    client: str  # the root namespace's address, in listen.allow
    stranger: str  # another one, not in it

    def curl(
        self, path: str, *, token: str | None = None, inside: bool = False, max_time: int = 10
    ) -> tuple[int, str]:
        """GET path, from the root namespace over the veth pair or from inside over loopback."""
        host = "127.0.0.1" if inside else self.address
        command = ["curl", "-sS", "--max-time", str(max_time), "-w", "\n%{http_code}"]
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
    require_root_ip_and_curl()
    third = secrets.randbelow(200) + 20
    fourth = secrets.randbelow(30) * 8
    root_address, address = f"169.254.{third}.{fourth + 1}", f"169.254.{third}.{fourth + 2}"
    stranger = f"169.254.{third}.{fourth + 3}"  # on the link, not in listen.allow
    config = tmp_path / "router.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [base]
            config = "none"

            [listen]
            mixed = "0.0.0.0:{MIXED_PORT}"
            allow = ["{root_address}/32", "127.0.0.0/8"]

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
        net.address(None, outer, f"{root_address}/29", f"{stranger}/29")
        net.address(namespace, inner, f"{address}/29")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DETOUR_STATE_DIR": str(tmp_path)}
        try:
            process = start_detour(net, namespace, config, log, env)
            yield Router(namespace, address, process, log, root_address, stranger)
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


def _idle_sockets(router: Router, source: str, count: int) -> tuple[list[socket.socket], int]:
    """`count` connections to the API from `source` that send nothing, and how many of them
    detour reset before connect() returned (it closes refused clients as they come)."""
    sockets, reset = [], 0
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        try:
            sock.connect((router.address, API_PORT))
        except ConnectionResetError:
            sock.close()
            reset += 1
            continue
        sockets.append(sock)
    return sockets, reset


def _closed_by_detour(sock: socket.socket) -> bool:
    """Whether detour has closed this connection (an end or a reset is waiting to be read);
    a connection detour keeps open has nothing to read."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _wait_closed(sockets: list[socket.socket], count: int) -> int:
    """Wait until at least `count` of `sockets` are closed by detour (bounded); how many are."""
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a pause
    while True:
        closed = sum(_closed_by_detour(sock) for sock in sockets)
        if closed >= count or time.monotonic() > deadline:
            return closed
        time.sleep(0.05)


@pytest.mark.parametrize("source", ["stranger", "client"])
def test_idle_sockets_from_the_lan_do_not_lock_out_loopback(router: Router, source: str) -> None:
    """64 connections that send nothing, from a host outside listen.allow (closed at once)
    or from a client in it (all but its per-client share closed at once): the API still
    answers on loopback and to the LAN client, with no wait."""
    address = getattr(router, source)
    sockets, reset = _idle_sockets(router, address, 64)
    try:
        expected = 64 if source == "stranger" else 64 - API_CONNECTIONS_PER_CLIENT
        assert reset + _wait_closed(sockets, expected - reset) == expected
        assert router.curl("/healthz", inside=True, max_time=3)[0] == 200
        if source == "stranger":
            assert router.curl("/healthz", token=TOKEN, max_time=3)[0] == 200
            assert f"refused client {router.stranger}" in router.log.read_text()
    finally:
        for sock in sockets:
            sock.close()
