"""The lab as a thing that starts, changes and stops: nothing left listening afterwards, two
labs side by side, a scenario switched while connections are open, clear errors."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

import pytest

from helper.config import ConfigError
from helper.lab.lab import Lab
from helper.lab.scenario import parse_scenario
from tests.support import plainclient
from tests.support.networks import free_network


def bindable(address: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


async def check(lab: Lab, target: str) -> plainclient.Outcome:
    return await plainclient.check(
        target,
        dns_server=lab.dns_address,
        cafile=lab.ca.ca_path,
        public=ipaddress.IPv4Network(lab.table.network),
        timeout=1.0,
    )


async def test_stops_without_leaving_a_listener_or_a_directory() -> None:
    lab = Lab("sni-reset", network=free_network())
    await lab.start()
    directory = lab.directory
    endpoints = [(address, port) for _, address, port in lab.table.endpoints()]
    assert directory is not None
    assert not bindable(*endpoints[0])
    await lab.stop()
    assert all(bindable(address, port) for address, port in endpoints)
    assert bindable(lab.table.dns_address, 53, socket.SOCK_DGRAM)
    assert bindable(lab.table.dns_address, 53)
    assert not directory.exists()


async def test_two_labs_at_once_on_different_networks() -> None:
    async with (
        Lab("baseline", network=free_network()) as one,
        Lab("sni-reset", network=free_network()) as two,
    ):
        assert (await check(one, "tls://web.telegram.org:443")).ok
        failed = await check(two, "tls://web.telegram.org:443")
        assert (failed.failure, failed.op) == ("connection_reset", "tls_handshake")
        assert (await check(two, "tls://control.lab.test:443")).ok


async def test_a_second_lab_on_the_same_network_says_so() -> None:
    from helper.lab.lab import LabError

    network = free_network()
    async with Lab("baseline", network=network):
        with pytest.raises(LabError, match="address in use"):
            async with Lab("baseline", network=network):
                pass


async def test_switching_scenarios_affects_new_flows_only() -> None:
    async with Lab("baseline", network=free_network()) as lab:
        address = lab.table.address("telegram-web")
        context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
        reader, writer = await asyncio.open_connection(
            address, 443, ssl=context, server_hostname="web.telegram.org"
        )
        await lab.set_scenario("sni-reset")
        # A new connection meets the new rule ...
        failed = await check(lab, "tls://web.telegram.org:443")
        assert failed.failure == "connection_reset"
        # ... the one opened before keeps working.
        writer.write(b"GET /still HTTP/1.1\r\nHost: web.telegram.org\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).endswith(b"hello from web.telegram.org (lab)\n")
        writer.close()
        await lab.set_scenario("baseline")
        assert (await check(lab, "tls://web.telegram.org:443")).ok


async def test_refuse_closes_the_listener_while_the_lab_runs() -> None:
    refuse = parse_scenario(
        '[[rule]]\naction = "refuse"\nhosts = ["control"]\n'
        '[[check]]\ntarget = "tls://control.lab.test:443"\n',
        "refuse-control",
    )
    async with Lab("baseline", network=free_network()) as lab:
        await lab.set_scenario(refuse)
        refused = await check(lab, "tls://control.lab.test:443")
        assert (refused.failure, refused.op) == ("connection_refused", "connect")
        assert (await check(lab, "tls://web.telegram.org:443")).ok
        await lab.set_scenario("baseline")
        assert (await check(lab, "tls://control.lab.test:443")).ok


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[rule]]\naction = "explode"\n', "rule[0].action: 'explode' is not one of: pass, reset"),
        ('[[rule]]\naction = "throttle"\n', "rule[0]: a throttle rule needs rate"),
        ('[[rule]]\naction = "refuse"\nsni = "x.org"\n', "rule[0]: refuse acts on connection"),
        ('[[rule]]\naction = "drop"\nhosts = ["nope"]\n', "rule[0].hosts[0]: 'nope' is not one of"),
        ('[dpi]\ndepth = "deep"\n', "dpi.depth: 'deep' is not one of: first-segment"),
        ('[[dns]]\nmatch = "x.org"\naction = "lie"\n', "dns[0].action: 'lie' is not one of"),
        ('[[check]]\ntarget = "ftp://x"\n', "check[0].target: 'ftp://x': write targets as"),
        (
            '[[check]]\ntarget = "tls://@nope:443"\n',
            "check[0].target: 'tls://@nope:443': no lab host",
        ),
        ('[[check]]\ntarget = "tls://x:443"\nfailure = "boom"\nop = "read"\n', "unknown failure"),
        ('[[expect]]\nroute = "direct"\nservice = "icq"\n', "expect[0].service: 'icq'"),
        ("rules = []\n", "rules: unknown key (did you mean 'rule'?"),
    ],
)
def test_scenario_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(text, "bad")
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_every_scenario_is_named_after_its_file() -> None:
    from helper.lab.scenario import load_scenario, scenario_names

    for name in scenario_names():
        scenario = load_scenario(name)
        assert scenario.name == name
        assert set(scenario.best) <= {"telegram", "whatsapp", "signal"}
