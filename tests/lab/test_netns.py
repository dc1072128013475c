"""The kernel-level lab: its nftables rules, its clean-up, and detour's own diagnosis of a
real black-hole (a connect that times out, which the userland lab cannot show)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import sys

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.censor import Policy, Rule
from helper.lab.netns import NetnsLab, nft_ruleset
from tests.lab.conftest import require_netns
from tests.support.clients import exchange
from tests.support.networks import free_network


def test_nft_rules_carry_only_address_level_drops_and_refusals() -> None:
    import ipaddress

    net = (ipaddress.ip_network("10.77.1.0/24"),)
    policy = Policy(
        rules=(
            Rule("drop", cidrs=net),
            Rule("refuse", cidrs=(ipaddress.ip_network("10.77.9.2/32"),), ports=frozenset({443})),
            Rule("reset", sni="telegram.org"),  # content: userland
            Rule("drop", cidrs=net, probability=0.5),  # probabilistic: userland
            Rule("throttle", cidrs=net, rate=1000),  # shaping: userland
        )
    )
    text = nft_ruleset(policy)
    assert "    ip daddr { 10.77.1.0/24 } meta l4proto tcp drop\n" in text
    assert "    ip daddr { 10.77.9.2/32 } tcp dport { 443 } reject with tcp reset\n" in text
    assert text.count(" drop\n") == 1
    assert 'iifname "lo" accept' in text  # the lab's own proxies are never censored here
    assert text.startswith("table inet detour_lab\ndelete table inet detour_lab\n")


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def routes() -> str:
    return subprocess.run(["ip", "route"], capture_output=True, text=True).stdout


async def test_stop_removes_the_namespace_the_veth_and_the_route() -> None:
    require_netns()
    network = free_network(kernel=True)
    lab = NetnsLab("baseline", network=network)
    await lab.start()
    made = [lab.name, lab.client_namespace, *(f"detour-lab-{r}-{lab._tag}" for r in ("gw", "isp"))]
    assert all(name in namespaces().split() for name in made)
    assert lab._copy_link is not None  # the client link copies packets as it sends them
    await lab.stop()
    assert not any(name in namespaces().split() for name in made)
    assert network not in routes()


async def test_a_killed_lab_is_cleaned_up_by_the_next_start() -> None:
    require_netns()
    network = free_network(kernel=True)
    first = NetnsLab("baseline", network=network)
    await first.start()
    assert first._child is not None
    first._child.kill()  # as if the lab had been killed: namespace and route stay behind
    await first._child.wait()
    first._child = None
    second = NetnsLab("baseline", network=network)
    await second.start()  # removes the leftovers first
    await second.stop()
    await first.stop()
    assert second.name not in namespaces()


async def test_detour_reports_a_black_hole_as_a_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_netns()
    caplog.set_level(logging.INFO)
    async with NetnsLab("ip-blackhole", network=free_network(kernel=True)) as lab:
        config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
        direct = dataclasses.replace(config.route("direct"), timeout=1.0)
        config = dataclasses.replace(config, routes=(direct,), services=(), default_policy="direct")
        async with Engine(config) as engine:
            dc2 = lab.table.address("telegram-dc2")
            # v5 no-auth | v5 CONNECT IPv4 DC2 :443
            request = (
                b"\x05\x01\x00\x05\x01\x00\x01" + bytes(map(int, dc2.split("."))) + b"\x01\xbb"
            )
            reply = await exchange(engine.mixed_address, request, timeout=5)
    assert reply[2:4] == b"\x05\x04"  # host unreachable: what SOCKS5 has for a timeout
    assert "generic_timeout_error during connect" in caplog.text


async def test_the_client_namespace_resolves_with_the_labs_resolver_and_sees_nothing_else() -> None:
    require_netns()
    async with NetnsLab("dns-poison", network=free_network(kernel=True)) as lab:
        script = (
            "import socket\n"
            "print(socket.gethostbyname('chat.signal.org'))\n"  # the lab's answer
            "print(socket.gethostbyname('g.whatsapp.net'))\n"  # the scenario's bogon
            "s = socket.socket(); s.settimeout(1)\n"
            "try:\n    s.connect(('10.10.34.34', 5222))\n"
            "except OSError as exc:\n    print(type(exc).__name__)\n"
        )
        process = await asyncio.create_subprocess_exec(
            *lab.client_command(sys.executable, "-c", script), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
    assert out.decode().split() == [lab.table.address("signal-chat"), "10.10.34.34", "TimeoutError"]
