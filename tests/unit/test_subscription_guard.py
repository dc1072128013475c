"""A subscription's node may not lead into the user's own network by name
(helper/subscriptions/guard.py): the server's name resolved at dial time, a private answer
fails the route's dial with the name, the address and the setting; the base dialer's
check holds on the answer it connects with (a name that answers differently the second
time); nodes of a list that allows private addresses, and routes of the file, are as
they were."""

from __future__ import annotations

import pytest

from helper.config.subscription import with_pools
from helper.routing.route import build_routes
from helper.subscriptions.formats import parse_list
from helper.subscriptions.guard import NodeGuard
from transports import DialError, Endpoint, Failure
from transports.guard import check_addresses
from transports.resolver import StaticResolver

from .test_subscriptions import config


class Inner:
    """A dialer that looks its server up again when it connects (as the direct one does)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.dialed: list[Endpoint] = []

    async def dial(self, target: Endpoint):
        import ipaddress

        check_addresses("node.example", [ipaddress.ip_address(self.answer)])
        self.dialed.append(target)
        return "stream"


RESOLVER = StaticResolver({"node.example": ["192.168.1.5"], "ok.example": ["198.51.100.7"]})


async def test_a_name_that_resolves_into_the_lan_fails_the_dial() -> None:
    inner = Inner("192.168.1.5")
    guard = NodeGuard(inner, "panel.x", Endpoint("node.example", 1080), RESOLVER)
    with pytest.raises(DialError) as caught:
        await guard.dial(Endpoint("web.telegram.org", 443))
    error = caught.value
    assert error.failure is Failure.DNS_BOGON
    assert "panel.x: node.example resolves to 192.168.1.5" in error.detail
    assert "allow_private = true" in error.detail
    assert inner.dialed == []


async def test_a_public_name_dials_and_a_rebinding_answer_is_caught() -> None:
    inner = Inner("198.51.100.7")
    guard = NodeGuard(inner, "panel.x", Endpoint("ok.example", 1080), RESOLVER)
    assert await guard.dial(Endpoint("web.telegram.org", 443)) == "stream"
    # The base dialer's own answer (the second lookup) is private: refused there too.
    rebinding = NodeGuard(
        Inner("127.0.0.1"), "panel.x", Endpoint("node.example", 1080),
        StaticResolver({"node.example": ["198.51.100.7"]}),
    )  # fmt: skip
    with pytest.raises(DialError) as caught:
        await rebinding.dial(Endpoint("web.telegram.org", 443))
    assert caught.value.failure is Failure.DNS_BOGON
    assert "node.example resolves to 127.0.0.1, a private, loopback or link-local address" in str(
        caught.value
    )


class CountingResolver(StaticResolver):
    def __init__(self, table: dict[str, list[str]]) -> None:
        super().__init__(table)
        self.lookups = 0

    async def resolve(self, host: str):
        self.lookups += 1
        return await super().resolve(host)


async def test_where_detour_connects_itself_the_name_is_looked_up_once() -> None:
    # The base dialer's answer is checked; no lookup of the guard's own before it.
    resolver = CountingResolver({"node.example": ["192.168.1.5"]})
    guard = NodeGuard(
        Inner("192.168.1.5"), "panel.x", Endpoint("node.example", 1080), resolver,
        resolve_first=False,
    )  # fmt: skip
    with pytest.raises(DialError) as caught:
        await guard.dial(Endpoint("web.telegram.org", 443))
    assert resolver.lookups == 0
    assert caught.value.failure is Failure.DNS_BOGON
    # The same words as when the guard's own lookup refuses.
    assert "panel.x: node.example resolves to 192.168.1.5, a private" in caught.value.detail


def test_only_core_nodes_are_looked_up_before_the_dial() -> None:
    nodes = parse_list(
        b"socks5://node.example:1080#s\ntrojan://secret@node.example:443?security=tls#t\n"
    ).nodes
    routes = build_routes(with_pools(config(), {"panel": nodes}), RESOLVER)
    first = {r.name: r.dialer.resolve_first for r in routes if type(r.dialer) is NodeGuard}
    assert first == {"panel.s": False, "panel.t": True}


def test_only_the_nodes_of_lists_without_allow_private_are_guarded() -> None:
    nodes = parse_list(b"socks5://node.example:1080#n\n").nodes
    guarded = build_routes(with_pools(config(), {"panel": nodes}), RESOLVER)
    kinds = {r.name: type(r.dialer).__name__ for r in guarded}
    assert kinds["panel.n"] == "NodeGuard" and kinds["direct"] != "NodeGuard"
    allowed = build_routes(with_pools(config("allow_private = true"), {"panel": nodes}), RESOLVER)
    assert all(type(r.dialer).__name__ != "NodeGuard" for r in allowed)
