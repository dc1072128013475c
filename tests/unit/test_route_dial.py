"""Route.dial: the route's timeout bounds the whole dial, and names the step it cut short.

The layers here are scripted stand-ins that only set `dial_phase` and wait or fail; the
integration tests in tests/integration/test_routing.py run the same through real SOCKS
servers.
"""

from __future__ import annotations

import asyncio

import pytest

from helper.routing import Route
from transports import DialError, Endpoint, Failure, Op, parse_chain
from transports.base import dial_phase

TARGET = Endpoint("example.com", 443)
CHAIN = parse_chain("direct")


class Scripted:
    """A dialer that walks through `phases`, then does `end` (hang, fail or return)."""

    def __init__(self, phases: list[Op], end: str = "hang") -> None:
        self.phases = phases
        self.end = end
        self.stream = object()

    async def dial(self, target: Endpoint) -> object:
        for phase in self.phases:
            dial_phase.set(phase)
            await asyncio.sleep(0)
        if self.end == "hang":
            await asyncio.Event().wait()
        if self.end == "timeout":
            raise TimeoutError  # a layer's own, not the route's
        if self.end == "fail":
            raise DialError(Failure.CONNECTION_REFUSED, Op.CONNECT, "refused")
        return self.stream


@pytest.mark.parametrize("last", [Op.RESOLVE, Op.CONNECT, Op.PROXY_HANDSHAKE])
async def test_the_deadline_names_the_route_and_the_step_it_cut(last: Op) -> None:
    route = Route("vps", CHAIN, Scripted([Op.RESOLVE, last]), None, timeout=0.05)
    with pytest.raises(DialError) as caught:
        await route.dial(TARGET)
    assert caught.value.failure is Failure.TIMEOUT
    assert caught.value.op is last
    assert caught.value.detail == "route 'vps' did not connect within 0.05s"


async def test_a_dial_without_phases_is_cut_during_connect() -> None:
    dial_phase.set(Op.PROXY_HANDSHAKE)  # left over from an earlier dial in this task
    route = Route("vps", CHAIN, Scripted([]), None, timeout=0.05)
    with pytest.raises(DialError) as caught:
        await route.dial(TARGET)
    assert caught.value.op is Op.CONNECT


async def test_a_layers_own_errors_pass_through() -> None:
    own_timeout = Route("a", CHAIN, Scripted([Op.CONNECT], "timeout"), None, timeout=5.0)
    with pytest.raises(TimeoutError) as caught:
        await own_timeout.dial(TARGET)
    assert not isinstance(caught.value, DialError)
    refused = Route("b", CHAIN, Scripted([Op.CONNECT], "fail"), None, timeout=5.0)
    with pytest.raises(DialError) as failed:
        await refused.dial(TARGET)
    assert failed.value.failure is Failure.CONNECTION_REFUSED


async def test_a_dial_in_time_returns_its_stream() -> None:
    dialer = Scripted([Op.CONNECT, Op.PROXY_HANDSHAKE], "return")
    assert await Route("a", CHAIN, dialer, None, timeout=5.0).dial(TARGET) is dialer.stream


async def test_without_a_timeout_only_the_layers_bound_the_dial() -> None:
    dialer = Scripted([Op.CONNECT], "return")
    assert await Route("a", CHAIN, dialer).dial(TARGET) is dialer.stream


class Picky(Scripted):
    """Carries only 10.0.0.1, and says so before dialing (as tgws does for DC addresses)."""

    def __init__(self) -> None:
        super().__init__([], end="return")
        self.dialed: list[Endpoint] = []

    def not_applicable(self, target: Endpoint) -> str | None:
        return None if target.host == "10.0.0.1" else f"{target.host} is no DC"

    async def dial(self, target: Endpoint) -> object:
        self.dialed.append(target)
        if self.not_applicable(target):
            raise DialError(Failure.NOT_APPLICABLE, Op.CONNECT, "no DC")
        return await super().dial(target)


async def test_the_router_leaves_out_a_route_that_cannot_carry_the_destination() -> None:
    from helper.routing import Router
    from helper.services import Service, ServiceTable

    picky = Route("picky", CHAIN, Picky())
    plain = Route("plain", CHAIN, Scripted([], end="return"))
    service = Service("telegram", domains=("example.com",), cidrs=())
    router = Router([picky, plain], ServiceTable([service]), "plain")
    assert picky.not_applicable(TARGET) == "example.com is no DC"
    assert plain.not_applicable(TARGET) is None
    _, planned = router.plan(TARGET)
    assert [route.name for route in planned] == ["plain"]
    connection = await router.connect(TARGET)
    assert connection.route is plain and picky.dialer.dialed == []

    # When nothing else is left, the route is tried, fails at once with its reason, and
    # that is not held against its health.
    router.disable("plain")
    for _ in range(5):
        with pytest.raises(Exception, match="no DC"):
            await router.connect(TARGET)
    assert router.health.get("telegram", "picky").ok is None


async def test_a_race_books_its_first_route_at_once_and_its_later_ones_as_a_client() -> None:
    from helper.routing import Router
    from helper.search.budget import HandshakeBudget
    from helper.services import Service, ServiceTable

    class Refused(Scripted):
        async def dial(self, target: Endpoint) -> object:
            raise DialError(Failure.CONNECTION_REFUSED, Op.CONNECT, "refused")

    budget = HandshakeBudget(limit=3, window=0.01, gap=0.001)
    booked: list[tuple[str, bool, bool]] = []
    book = budget.book

    def spy(name: str, now: float, *, client: bool = False, first: bool = False):
        booked.append((name, client, first))
        return book(name, now, client=client, first=first)

    budget.book = spy  # type: ignore[method-assign]
    routes = [Route("a", CHAIN, Refused([])), Route("b", CHAIN, Scripted([], end="return"))]
    service = Service("telegram", domains=("example.com",), cidrs=())
    router = Router(routes, ServiceTable([service]), "a", budget=budget)
    connection = await router.connect(TARGET)
    assert connection.route.name == "b"
    assert booked == [(TARGET.host, True, True), (TARGET.host, True, False)]
