"""`detour router-rules` on a router in network namespaces: the rules it writes, loaded with
`nft -f` (and its policy routing run with `sh`), hand a phone's TCP and UDP for a service to
detour, and leave everything else alone:

    phone 10.85.0.2      --veth--  10.85.0.1 router 10.86.0.1   --veth--  10.86.0.2 service
          fd00:85::2                fd00:85::1      fd00:86::1            fd00:86::2
                                    detour: transparent [::]:1090,        10.86.0.3, fd00:86::3
                                    transparent_udp [::]:1091             other (not a service)

Each server tells the address it saw: through detour that is the router's, routed straight
it is the phone's. QUIC (UDP 443) to the service is rejected by the rules; to the other
address it is answered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.netns import ROOT, require_namespaces, run_phone

pytestmark = [pytest.mark.timeout(90)]

SERVICE, OTHER = "10.86.0.2", "10.86.0.3"
SERVICE6, OTHER6 = "fd00:86::2", "fd00:86::3"
ROUTER_WAN, ROUTER_WAN6 = "10.86.0.1", "fd00:86::1"
PHONE, PHONE6 = "10.85.0.2", "fd00:85::2"
HOSTS = (SERVICE, OTHER, SERVICE6, OTHER6)

# TCP 5222 says who connected; STUN 3478 says the same for UDP; UDP 443 (QUIC) echoes.
SERVERS = f"""
import asyncio
from helper.lab.udpmocks import StunServer, UdpEcho, start_udp
async def whoami(reader, writer):
    writer.write(writer.get_extra_info("peername")[0].encode() + b"\\n")
    await writer.drain()
    writer.close()
async def main():
    for host in {HOSTS!r}:
        await asyncio.start_server(whoami, host, 5222)
        await start_udp(StunServer(), host, 3478)
        await start_udp(UdpEcho(), host, 443)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PHONE_SCRIPT = f"""
import socket
from transports.stun import binding_request, parse_message
def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET
def udp(host, port, payload):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((host, port))
    for _ in range(3):
        s.send(payload)
        try:
            return s.recv(2048)
        except socket.timeout:
            continue
        except ConnectionRefusedError:
            return None
    raise AssertionError(f"no answer from {{host}}:{{port}}")
for host in {HOSTS!r}:
    s = socket.create_connection((host, 5222), timeout=5)
    print("tcp", host, "sees", s.makefile().readline().strip(), flush=True)
    request, tid = binding_request()
    answer = parse_message(udp(host, 3478, request))
    assert answer.transaction == tid
    print("stun", host, "sees", answer.mapped.host, flush=True)
    quic = udp(host, 443, b"quic")
    print("quic", host, "refused" if quic is None else "answered", flush=True)
"""

CONFIG = f"""
[base]
config = "none"

[listen]
mixed = "127.0.0.1:0"
transparent = "[::]:1090"
transparent_udp = "[::]:1091"
allow = ["10.85.0.0/24", "fd00:85::/64"]
remote_public = ["10.86.0.0/24", "fd00:86::/64"]

[[route]]
name = "direct"
chain = "direct"

[[service]]
name = "calls"
cidrs = ["{SERVICE}/32", "{SERVICE6}/128"]
"""


def _detour(*argv: str) -> str:
    """`detour ARGV...` (this checkout's): its output, which must be a success."""
    result = subprocess.run(
        [sys.executable, "-m", "helper", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow  # about 5-10 s: three namespaces, detour's start, a dozen exchanges
def test_generated_rules_hand_the_service_to_detour_and_leave_the_rest(tmp_path: Path) -> None:
    require_namespaces()
    config = tmp_path / "router.toml"
    config.write_text(CONFIG)
    with Namespaces() as net:
        phone = net.namespace("drr-p")
        router = net.namespace("drr-r", forwarding=True)
        service = net.namespace("drr-s")
        phone_end, router_lan = net.veth("drl", phone, router)
        router_wan, service_end = net.veth("drw", router, service)
        net.address(phone, phone_end, f"{PHONE}/24", f"{PHONE6}/64")
        net.address(router, router_lan, "10.85.0.1/24", "fd00:85::1/64")
        net.address(router, router_wan, f"{ROUTER_WAN}/24", f"{ROUTER_WAN6}/64")
        net.address(service, service_end, *(f"{h}/{64 if ':' in h else 24}" for h in HOSTS))
        net.route(phone, "default", "via", "10.85.0.1")
        net.run(phone, "ip", "-6", "route", "add", "default", "via", "fd00:85::1")
        net.route(service, "default", "via", ROUTER_WAN)
        net.run(service, "ip", "-6", "route", "add", "default", "via", ROUTER_WAN6)
        # What a router owner runs: the generated rules and policy routing, as printed.
        rules = _detour("router-rules", "-c", str(config), "--lan", router_lan)
        policy = _detour("router-rules", "-c", str(config), "--lan", router_lan,
                         "--policy-routing")  # fmt: skip
        net.run(router, "nft", "-f", "-", stdin=rules)
        net.run(router, "sh", "-e", "-s", stdin=policy)
        lines = run_phone(
            tmp_path,
            (phone, router, service),
            (SERVERS, config, PHONE_SCRIPT),
            ("transparent UDP on", "transparent listener on"),
        )
    # The service, over both families and both protocols: through detour (the router's
    # address); QUIC to it is refused, so apps fall back to TCP.
    for host, router_address in ((SERVICE, ROUTER_WAN), (SERVICE6, ROUTER_WAN6)):
        assert f"tcp {host} sees {router_address}" in lines, lines
        assert f"stun {host} sees {router_address}" in lines, lines
        assert f"quic {host} refused" in lines, lines
    # Another address: routed straight, untouched.
    for host, phone_address in ((OTHER, PHONE), (OTHER6, PHONE6)):
        assert f"tcp {host} sees {phone_address}" in lines, lines
        assert f"stun {host} sees {phone_address}" in lines, lines
        assert f"quic {host} answered" in lines, lines
    log = (tmp_path / "detour.log").read_text()  # run_phone checked it for tracebacks
    assert f"transparent {SERVICE}:5222" in log, log


def test_both_flavours_load_into_nftables(tmp_path: Path) -> None:
    """The built-in services' rules (with a transparent config) load: the nftables flavour
    twice (the second replaces the first: no rule doubles), the OpenWrt flavour inside a
    table as fw4 includes it."""
    require_namespaces()
    config = tmp_path / "router.toml"
    config.write_text(
        '[listen]\ntransparent = "[::]:1090"\ntransparent_udp = "[::]:1091"\n'
        'allow = ["192.168.1.0/24"]\n'
    )
    rules = _detour("router-rules", "-c", str(config), "--lan", "br-lan", "--lan", "wlan0")
    openwrt = _detour("router-rules", "-c", str(config), "--lan", "br-lan", "--flavour", "openwrt")
    with Namespaces() as net:
        router = net.namespace("drr-f")
        net.run(router, "nft", "-f", "-", stdin=rules)
        first = net.run(router, "nft", "list", "table", "inet", "detour")
        net.run(router, "nft", "-f", "-", stdin=rules)
        assert net.run(router, "nft", "list", "table", "inet", "detour") == first
        assert first.count("redirect to :1090") > 0 and first.count("tproxy ip6 to :1091") > 0
        net.run(router, "nft", "-f", "-", stdin="table inet fw4 {\n" + openwrt + "}\n")
        fw4 = net.run(router, "nft", "list", "table", "inet", "fw4")
    assert "set detour_telegram_v4" in fw4 and "chain detour_calls" in fw4, fw4
