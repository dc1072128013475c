"""A small router network in three namespaces, with detour running as a real process in the
router namespace (Linux, root, `ip` and `nft`):

    client ns                     router ns                          upstream ns
    10.202.0.2, .3 (LAN)  veth  10.202.0.1 | 10.201.0.1    veth    10.201.0.2
    default via .1               detour: mixed :1080,               lo: 10.203.0.10 (the
                                 transparent :1090                  service), echo on :443
                                 nft: 10.203.0.0/24 tcp -> :1090    and :80

The service's range 10.203.0.0/24 and the uplink 10.201.0.0/24 stand for the internet
(`listen.remote_public`), so the policy's refusals of private ranges are still tested with
every other 10/8 address. Namespace, interface and nft table names carry a per-run suffix;
deleting the namespaces removes everything else with them.

Client sockets are made inside the client namespace by a short-lived thread that enters it
(setns), so the test process itself plays the LAN device without a subprocess per
connection.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.peers import require_peer, skip_or_fail, terminate

ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
SERVICE_IP = "10.203.0.10"
ROUTER_LAN = "10.202.0.1"
CLIENT = "10.202.0.2"
SERVICE_IP6 = "fd23::10"
CLIENT6 = "fd20::2"
STRANGER = "10.202.0.3"  # on the LAN but not in listen.allow
METADATA = "169.254.169.254"  # a cloud metadata service, reachable from the router
PASSWORD = "lan-pass-7"

ECHO_SERVER = """
import asyncio, sys
async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()
async def main():
    hosts, ports = sys.argv[1:4], sys.argv[4:]
    servers = [await asyncio.start_server(echo, h, int(p)) for h in hosts for p in ports]
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def require_router_netns() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux-only")
    require_peer("ip", "iproute2")
    require_peer("nft", "nftables")
    if os.geteuid() != 0:
        skip_or_fail("the router tests need root (network namespaces, nftables)")


@dataclass
class RouterNet:
    namespaces: Namespaces
    directory: Path
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    log_path: Path | None = None
    client_ns: str = ""  # the namespaces' names, once built
    router_ns: str = ""
    upstream_ns: str = ""

    @property
    def nft_table(self) -> str:
        return f"detour_test_{self.namespaces.suffix}"

    @property
    def detour_log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text()

    # --- building and tearing down --------------------------------------------------------

    def build(self) -> None:
        net = self.namespaces
        c, r, u = (net.namespace(f"dtr-{role}") for role in "cru")
        self.client_ns, self.router_ns, self.upstream_ns = c, r, u
        lan_r, lan_c = net.veth("dtl", r, c)
        wan_r, wan_u = net.veth("dtw", r, u)
        # IPv6 alongside (the builder skips duplicate address detection: usable at once)
        net.address(r, lan_r, f"{ROUTER_LAN}/24", "fd20::1/64")
        net.address(r, wan_r, "10.201.0.1/24", "fd21::1/64")
        net.address(c, lan_c, f"{CLIENT}/24", f"{STRANGER}/24", f"{CLIENT6}/64")
        net.address(u, wan_u, "10.201.0.2/24", "fd21::2/64")
        net.address(u, "lo", f"{SERVICE_IP}/32", f"{SERVICE_IP6}/128", f"{METADATA}/32")
        net.route(c, "default", "via", ROUTER_LAN)
        net.route(c, "default", "via", "fd20::1")
        net.route(r, "fd23::/64", "via", "fd21::2")
        net.route(u, "default", "via", "fd21::1")
        net.route(r, "10.203.0.0/24", "via", "10.201.0.2")
        net.route(r, f"{METADATA}/32", "via", "10.201.0.2")
        net.route(u, "default", "via", "10.201.0.1")
        # The recipe of docs/router.md: redirect only the service's range.
        ruleset = textwrap.dedent(f"""\
            table inet {self.nft_table} {{
              chain prerouting {{
                type nat hook prerouting priority dstnat; policy accept;
                ip daddr 10.203.0.0/24 tcp dport {{ 80, 443 }} redirect to :1090
                ip6 daddr fd23::/64 tcp dport {{ 80, 443 }} redirect to :1090
              }}
            }}
        """)
        net.run(r, "nft", "-f", "-", stdin=ruleset)

    def teardown(self) -> None:
        for process in self.processes:
            terminate(process)
        self.namespaces.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- processes ------------------------------------------------------------------------

    def start_echo(self) -> None:
        process = subprocess.Popen(
            self.namespaces.exec(self.upstream_ns, sys.executable, "-c", ECHO_SERVER,
                                 SERVICE_IP, SERVICE_IP6, METADATA, "443", "80"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the echo server did not start: {line}")

    def start_detour(self, config: str) -> None:
        path = self.directory / "detour.toml"
        path.write_text(config)
        self.log_path = self.directory / "detour.log"
        with self.log_path.open("w") as out:
            process = subprocess.Popen(
                self.namespaces.exec(self.router_ns, sys.executable, "-m", "helper", "run",
                                     "--headless", "-c", str(path)),
                stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1",
                     "DETOUR_STATE_DIR": str(self.directory / "state")},
            )  # fmt: skip
        self.processes.append(process)
        deadline = time.monotonic() + 20
        while "transparent listener on" not in self.detour_log:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"detour did not start:\n{self.detour_log}")
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.detour_log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in detour's log:\n{self.detour_log}")
            time.sleep(0.05)
        return self.detour_log

    # --- the LAN device -------------------------------------------------------------------

    def client_socket(self, source: str = CLIENT) -> socket.socket:
        """A TCP socket of the client namespace, bound to `source`."""
        made: list[socket.socket | BaseException] = []

        def enter_and_make() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.client_ns}") as handle:
                    if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                family = socket.AF_INET6 if ":" in source else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.bind((source, 0))
                made.append(sock)
            except BaseException as exc:  # handed to the caller's thread
                made.append(exc)

        # A thread of its own: it stays in the namespace until it ends, and ends at once.
        thread = threading.Thread(target=enter_and_make)
        thread.start()
        thread.join()
        result = made[0]
        if isinstance(result, BaseException):
            raise result
        result.settimeout(10)
        return result


@pytest.fixture(scope="module")
def router_net() -> Iterator[RouterNet]:
    require_router_netns()
    net = RouterNet(Namespaces(), Path(tempfile.mkdtemp(prefix="detour-router-")))
    try:
        net.build()
        net.start_echo()
        net.start_detour(ROUTER_CONFIG)
        yield net
    finally:
        net.teardown()


ROUTER_CONFIG = f"""
[base]
config = "none"

[listen]
mixed = "{ROUTER_LAN}:1080"
transparent = "[::]:1090"
allow = ["{CLIENT}/32", "{CLIENT6}/128"]
users = [{{ name = "lan", password = "{PASSWORD}" }}]
remote_public = ["10.203.0.0/24", "10.201.0.0/24", "fd23::/64"]
handshake_timeout = "3s"

[dns]
hosts = {{ "svc.example" = ["{SERVICE_IP}"] }}

[probe]
interval = "1h"
timeout = "2s"

[default]
policy = "direct"

[[route]]
name = "direct"
chain = "direct"

[[service]]
name = "svc"
domains = ["svc.example"]
cidrs = ["10.203.0.0/24", "fd23::/64"]
probes = ["tcp://{SERVICE_IP}:443"]
"""
