"""Transparent UDP on a router (nftables TPROXY), in network namespaces:

    phone 10.81.0.2 --veth-- 10.81.0.1 router 10.82.0.1 --veth-- 10.82.0.2, .3 service
                             detour: transparent_udp :1091     STUN :3478 on both,
                             nft: udp to 10.82.0.2 -> tproxy     UDP echo :7000 on .2

The phone has no proxy setting. Its STUN request to the service's address (10.82.0.2) goes
through detour's route: the STUN server sees the router's address. Its STUN request to
another address (10.82.0.3) is routed untouched: that server sees the phone itself. The UDP
echo comes back intact, from the service's own address, up to 1,400 bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helper.lab.namespaces import Namespaces
from tests.support.netns import STUN_CLIENT, require_namespaces, run_phone

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

SERVICE = "10.82.0.2"
OTHER = "10.82.0.3"

SERVERS = f"""
import asyncio
from helper.lab.udpmocks import StunServer, UdpEcho, start_udp
async def main():
    for host in ({SERVICE!r}, {OTHER!r}):
        await start_udp(StunServer(), host, 3478)
    await start_udp(UdpEcho(), {SERVICE!r}, 7000)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PHONE = (
    STUN_CLIENT
    + f"""
s = udp_socket()
for host in ({SERVICE!r}, {OTHER!r}):
    stun(s, host)
echo(s, {SERVICE!r})
"""
)

CONFIG = f"""
[base]
config = "none"

[listen]
mixed = "127.0.0.1:0"
transparent_udp = "0.0.0.0:1091"
allow = ["10.81.0.0/24"]
remote_public = ["10.82.0.0/24"]

[[route]]
name = "direct"
chain = "direct"

[[service]]
name = "calls"
cidrs = ["{SERVICE}/32"]
"""

NFT = f"""
table ip detour_udp_test {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        ip daddr {SERVICE} udp dport {{ 3478, 7000 }} tproxy to :1091 meta mark set 1 accept
    }}
}}
"""


def _run_phone(
    tmp_path: Path, names: tuple[str, str, str], scripts: tuple[str, str, str]
) -> list[str]:
    """tests/support/netns.py's run_phone, with the config's text written to a file."""
    servers_script, config_text, phone_script = scripts
    config = tmp_path / "router.toml"
    config.write_text(config_text)
    return run_phone(tmp_path, names, (servers_script, config, phone_script))


def test_phone_calls_go_through_the_route_and_others_are_untouched(tmp_path: Path) -> None:
    require_namespaces()
    with Namespaces() as net:
        phone = net.namespace("dup-p")
        router = net.namespace("dup-r", forwarding=True)
        service = net.namespace("dup-s")
        phone_end, router_lan = net.veth("dupl", phone, router)
        router_wan, service_end = net.veth("dupw", router, service)
        net.address(phone, phone_end, "10.81.0.2/24")
        net.address(router, router_lan, "10.81.0.1/24")
        net.address(router, router_wan, "10.82.0.1/24")
        net.address(service, service_end, f"{SERVICE}/24", f"{OTHER}/24")
        net.route(phone, "default", "via", "10.81.0.1")
        net.route(service, "default", "via", "10.82.0.1")
        # TPROXY'd packets are marked; the mark makes them local, so the socket gets them.
        net.run(router, "nft", "-f", "-", stdin=NFT)
        net.run(router, "ip", "rule", "add", "fwmark", "1", "lookup", "100")
        net.run(router, "ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        lines = _run_phone(tmp_path, (phone, router, service), (SERVERS, CONFIG, PHONE))
    # Through detour: the service sees the router; the other address sees the phone.
    assert f"{SERVICE} sees 10.82.0.1" in lines, lines
    assert f"{OTHER} sees 10.81.0.2" in lines, lines
    assert "echo ok" in lines


# --- IPv6: nftables `tproxy ip6`, IPV6_TRANSPARENT / IPV6_ORIGDSTADDR ------------------------
#
#   phone 10.81.0.2, fd00:81::2 --- router (detour: transparent_udp = "[::]:1091", one
#   dual-stack socket) --- service 10.82.0.2, fd00:82::2 (and fd00:82::3, not redirected)

SERVICE6 = "fd00:82::2"
OTHER6 = "fd00:82::3"

SERVERS6 = f"""
import asyncio
from helper.lab.udpmocks import StunServer, UdpEcho, start_udp
async def main():
    for host in ({SERVICE!r}, {SERVICE6!r}, {OTHER6!r}):
        await start_udp(StunServer(), host, 3478)
    await start_udp(UdpEcho(), {SERVICE6!r}, 7000)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PHONE6 = (
    STUN_CLIENT
    + f"""
stun(udp_socket(socket.AF_INET6), {SERVICE6!r})
stun(udp_socket(socket.AF_INET6), {OTHER6!r})
stun(udp_socket(socket.AF_INET), {SERVICE!r})
echo(udp_socket(socket.AF_INET6), {SERVICE6!r})
"""
)

CONFIG6 = f"""
[base]
config = "none"

[listen]
mixed = "127.0.0.1:0"
transparent_udp = "[::]:1091"
allow = ["10.81.0.0/24", "fd00:81::/64"]
remote_public = ["10.82.0.0/24", "fd00:82::/64"]

[[route]]
name = "direct"
chain = "direct"

[[service]]
name = "calls"
cidrs = ["{SERVICE}/32", "{SERVICE6}/128"]
"""

NFT6 = f"""
table inet detour_udp_test {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
        ip6 daddr {SERVICE6} udp dport {{ 3478, 7000 }} tproxy ip6 to :1091 meta mark set 1 accept
        ip daddr {SERVICE} udp dport 3478 tproxy ip to :1091 meta mark set 1 accept
    }}
}}
"""


def test_ipv6_phone_calls_go_through_the_route_and_others_are_untouched(tmp_path: Path) -> None:
    require_namespaces()
    with Namespaces() as net:
        phone = net.namespace("dup6-p")
        router = net.namespace("dup6-r", forwarding=True)
        service = net.namespace("dup6-s")
        phone_end, router_lan = net.veth("d6l", phone, router)
        router_wan, service_end = net.veth("d6w", router, service)
        net.address(phone, phone_end, "10.81.0.2/24", "fd00:81::2/64")
        net.address(router, router_lan, "10.81.0.1/24", "fd00:81::1/64")
        net.address(router, router_wan, "10.82.0.1/24", "fd00:82::1/64")
        net.address(service, service_end, f"{SERVICE}/24", f"{SERVICE6}/64", f"{OTHER6}/64")
        net.route(phone, "default", "via", "10.81.0.1")
        net.run(phone, "ip", "-6", "route", "add", "default", "via", "fd00:81::1")
        net.route(service, "default", "via", "10.82.0.1")
        net.run(service, "ip", "-6", "route", "add", "default", "via", "fd00:82::1")
        net.run(router, "nft", "-f", "-", stdin=NFT6)
        for family, everything in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            net.run(router, "ip", family, "rule", "add", "fwmark", "1", "lookup", "100")
            net.run(router, "ip", family, "route", "add", "local", everything, "dev", "lo",
                    "table", "100")  # fmt: skip
        lines = _run_phone(tmp_path, (phone, router, service), (SERVERS6, CONFIG6, PHONE6))
    # Through detour: the service sees the router; the other address sees the phone.
    assert f"{SERVICE6} sees fd00:82::1" in lines, lines
    assert f"{OTHER6} sees fd00:81::2" in lines, lines
    # IPv4 on the same dual-stack socket.
    assert f"{SERVICE} sees 10.82.0.1" in lines, lines
    assert "echo ok" in lines
