"""The system resolver's bogon check: a private address answered for a service's public name
is the network's resolver lying (dns_bogon_error during resolve), as it is for the resolvers
detour asks itself; names of the user's own network keep their private answers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from transports import DialError, Failure, Op
from transports.resolver import SystemResolver, bogons_in, parse_resolver

ANSWERS = {
    "g.whatsapp.net": "10.10.34.34",
    "web.whatsapp.com": "157.240.1.53",
    "intranet.example.com": "10.1.2.3",
    "lab.whatsapp.net": "10.77.2.1",
}


@pytest.fixture
async def answers(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ANSWERS[host], 0))]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


async def test_a_private_answer_for_a_service_name_is_a_bogon(answers: None) -> None:
    resolver = SystemResolver(checked=("whatsapp.net", "whatsapp.com"))
    with pytest.raises(DialError) as caught:
        await resolver.resolve("g.whatsapp.net")
    assert (caught.value.failure, caught.value.op) == (Failure.DNS_BOGON, Op.RESOLVE)
    assert "10.10.34.34" in caught.value.detail and "system resolver" in caught.value.detail
    assert await resolver.resolve("web.whatsapp.com") == [ipaddress.ip_address("157.240.1.53")]


async def test_other_names_keep_their_private_answers(answers: None) -> None:
    resolver = SystemResolver(checked=("whatsapp.net",))
    assert await resolver.resolve("intranet.example.com") == [ipaddress.ip_address("10.1.2.3")]
    assert await SystemResolver().resolve("g.whatsapp.net")  # nothing checked: as before


async def test_public_ranges_and_allow_private(answers: None) -> None:
    spec = parse_resolver("system;public=10.77.0.0/16")
    resolver = spec.build(checked=("whatsapp.net",))
    assert await resolver.resolve("lab.whatsapp.net")  # the lab's network stands for the internet
    with pytest.raises(DialError):
        await resolver.resolve("g.whatsapp.net")
    lenient = parse_resolver("system;allow_private=true").build(checked=("whatsapp.net",))
    assert await lenient.resolve("g.whatsapp.net")


def test_system_takes_no_bootstrap() -> None:
    assert parse_resolver("system").kind == "system"
    with pytest.raises(ValueError, match="unknown option"):
        parse_resolver("system;bootstrap=1.1.1.1")


def test_bogons_in_skips_names_that_are_not_public() -> None:
    private = [ipaddress.ip_address("192.168.1.1")]
    assert bogons_in("printer.lan", private) == []
    assert bogons_in("router", private) == []
    assert bogons_in("web.whatsapp.com", private) == ["192.168.1.1"]
