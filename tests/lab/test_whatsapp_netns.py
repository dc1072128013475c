"""The WhatsApp proxy on a router, with real network namespaces: a "phone" namespace and a
"router" namespace joined by a veth pair; in the router, the lab (sni-reset) and detour as a
real process (`python -m helper run --headless -c FILE`); the phone sets the router's LAN
address as its WhatsApp proxy and reaches the lab's WhatsApp mock through it.

    phone netns                         router netns
    192.168.77.2 --- veth pair ---  192.168.77.1: detour, [whatsapp_proxy] 443 5222 80 587 7777
                                    lo: the lab on 127.77.0.0/16 (`detour lab`)

Needs root and `ip`; skipped otherwise (a failure under DETOUR_REQUIRE_PEERS=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.peers import require_peer, skip_or_fail, terminate

ROOT = Path(__file__).resolve().parent.parent.parent
ROUTER_IP = "192.168.77.1"
PHONE_IP = "192.168.77.2"

# What the phone runs: each port in turn, 64 KiB each way; TLS on 443 without checking the
# certificate, as the app does. Prints one line per port.
PHONE = textwrap.dedent(
    """
    import random, socket, ssl, sys
    host = sys.argv[1]
    payload = random.Random(7).randbytes(65536)
    for port in (443, 5222, 80, 587, 7777):
        sock = socket.create_connection((host, port), timeout=20)
        if port == 443:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        sock.close()
        print(port, "intact" if got == payload else f"broken ({len(got)} bytes)", flush=True)
    """
)


@dataclass
class Lan:
    phone: str  # the namespaces
    router: str
    net: Namespaces


@pytest.fixture
def lan() -> Iterator[Lan]:
    require_peer("ip", "iproute2")
    if os.geteuid() != 0:
        skip_or_fail("the router test needs root (network namespaces, a veth pair)")
    with Namespaces() as net:
        phone, router = net.namespace("detour-phone"), net.namespace("detour-router")
        phone_if, router_if = net.veth("wa", phone, router)
        net.address(phone, phone_if, f"{PHONE_IP}/24")
        net.address(router, router_if, f"{ROUTER_IP}/24")
        yield Lan(phone, router, net)


def _start(lan: Lan, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """detour as a real process in the router namespace."""
    with log.open("wb") as out:
        return subprocess.Popen(
            lan.net.exec(lan.router, sys.executable, "-m", "helper", *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )


def _wait_for(what: str, log: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while what not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what!r}:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def test_a_phone_on_the_lan_reaches_whatsapp_through_the_router(lan: Lan, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DETOUR_STATE_DIR": str(tmp_path / "state")}
    config = tmp_path / "router.toml"
    lab_log, detour_log = tmp_path / "lab.log", tmp_path / "detour.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        lab = _start(
            lan,
            ["lab", "--scenario", "sni-reset", "--write-config", str(config)],
            lab_log,
            env,
        )
        processes.append(lab)
        _wait_for("lab running on", lab_log, lab, 60)
        text = config.read_text().replace(
            '[listen]\nmixed = "127.0.0.1:1080"\n',
            f'[listen]\nmixed = "127.0.0.1:1080"\nallow = ["{PHONE_IP}/32"]\n',
        )
        config.write_text(text + f'\n[whatsapp_proxy]\nlisten = "{ROUTER_IP}"\n')
        detour = _start(lan, ["run", "--headless", "-c", str(config)], detour_log, env)
        processes.append(detour)
        _wait_for("listening on", detour_log, detour, 30)
        _wait_for("whatsapp: now via", detour_log, detour, 60)  # the first probe is done

        phone = subprocess.run(
            lan.net.exec(lan.phone, sys.executable, "-c", PHONE, ROUTER_IP),
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = detour_log.read_text(errors="replace")
        assert phone.returncode == 0, phone.stderr + output
        assert phone.stdout.split("\n")[:5] == [
            f"{port} intact" for port in (443, 5222, 80, 587, 7777)
        ], output
        active = output.split("whatsapp: now via ")[-1].split()[0]
        assert active != "direct"  # sni-reset: direct fails the whatsapp probe
        assert f"client {PHONE_IP}:" in output
        assert f"whatsapp-tls g.whatsapp.net:5222 via {active}: 65536 bytes up" in output
        assert f"whatsapp-media whatsapp.net:443 via {active}: 65536 bytes up" in output
    finally:
        for process in reversed(processes):
            terminate(process, 15)
    assert "Traceback" not in detour_log.read_text(errors="replace")
