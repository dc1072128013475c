"""Choosing a route for a connection: the staggered race, failover, health order, pins,
disabled routes, and the events that say the active route changed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from helper.config import parse_config
from helper.events import RouteChanged
from helper.routing import AllRoutesFailed, Denied, RouteHealth, Router
from tests.conftest import config_text
from tests.support.clients import open_socks5
from tests.support.peers import free_port
from transports import Endpoint, Failure


class Silent:
    """A 'proxy' that accepts and never answers: a route through it hangs like a black-hole."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.writers.append(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    hole = Silent()
    port = await hole.start()
    hole.port = port  # type: ignore[attr-defined]
    yield hole
    await hole.stop()


def router_for(routes: dict[str, str], timeout: str = "5s", stagger: str = "250ms") -> Router:
    text = config_text(routes=routes) + f'\n[probe]\nstagger = "{stagger}"\n'
    for chain in routes.values():
        text = text.replace(
            f'chain = "{chain}"\n', f'chain = "{chain}"\ntimeout = "{timeout}"\n', 1
        )
    text += '\n[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n'
    config = parse_config(text)
    return Router.from_config(config)


async def test_a_black_hole_ahead_costs_one_stagger_not_its_timeout(silent, echo_origin) -> None:
    router = router_for(
        {"hole": f"socks5://127.0.0.1:{silent.port}", "direct": "direct"}, timeout="10s"
    )
    started = time.monotonic()
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    elapsed = time.monotonic() - started
    connection.stream.abort()
    assert connection.route.name == "direct"
    assert silent.accepted == 1  # the hole was tried first ...
    assert elapsed < 3.0  # ... and its 10 s timeout was not waited for (stagger: 250 ms)


async def test_several_holes_ahead(silent, echo_origin) -> None:
    hole = f"socks5://127.0.0.1:{silent.port}"
    router = router_for(
        {
            "hole1": hole,
            "hole2": hole + "/",
            "hole3": hole.replace("socks5", "http"),
            "direct": "direct",
        },
        timeout="10s",
    )
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.abort()
    assert connection.route.name == "direct"
    assert silent.accepted == 3


async def test_a_refusing_route_hands_over_at_once(echo_origin) -> None:
    router = router_for(
        {"refused": f"socks5://127.0.0.1:{free_port()}", "direct": "direct"}, stagger="5s"
    )
    started = time.monotonic()
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.abort()
    assert connection.route.name == "direct"
    assert (
        time.monotonic() - started < 2.5
    )  # not after the 5 s stagger: the failure starts the next
    assert router.health.get("local", "refused").dial_failures == 1


async def test_health_puts_the_working_route_first(silent, echo_origin) -> None:
    router = router_for({"hole": f"socks5://127.0.0.1:{silent.port}", "direct": "direct"})
    router.health.set("local", "hole", RouteHealth(ok=False))
    router.health.set("local", "direct", RouteHealth(ok=True))
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.abort()
    assert connection.route.name == "direct"
    assert silent.accepted == 0  # never dialled: direct won within the stagger


async def test_every_route_failing_names_each(silent) -> None:
    router = router_for(
        {"hole": f"socks5://127.0.0.1:{silent.port}", "direct": "direct"}, timeout="300ms"
    )
    with pytest.raises(AllRoutesFailed) as caught:
        await router.connect(Endpoint("127.0.0.1", free_port()))
    attempts = dict(caught.value.attempts)
    assert attempts["hole"].failure is Failure.TIMEOUT
    assert attempts["direct"].failure is Failure.CONNECTION_REFUSED


async def test_a_pin_overrides_and_disabled_routes_are_skipped(silent, echo_origin) -> None:
    router = router_for(
        {"hole": f"socks5://127.0.0.1:{silent.port}", "direct": "direct"}, timeout="300ms"
    )
    local = router.services.services[0]
    router.pins["local"] = "hole"
    with pytest.raises(AllRoutesFailed):
        await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    assert router.active_route(local).name == "hole"
    del router.pins["local"]
    router.disabled.add("hole")
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.abort()
    assert connection.route.name == "direct"
    router.disabled.add("direct")
    with pytest.raises(Denied, match="every route for local is disabled"):
        await router.connect(Endpoint("127.0.0.1", echo_origin.port))


async def test_repeated_failures_change_the_active_route_and_ask_for_a_probe(echo_origin) -> None:
    from helper.events import EventBus

    router = router_for({"refused": f"socks5://127.0.0.1:{free_port()}", "direct": "direct"})
    router.events = EventBus()
    events = router.events.subscribe()
    router.health.set("local", "refused", RouteHealth(ok=True))
    router.note_health_change("test")
    failing: list[str] = []
    router.on_failing = lambda service, route: failing.append(route.name)
    for _ in range(3):
        connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
        connection.stream.abort()
    assert failing == ["refused"]
    changes = []
    while (event := events.get_nowait()) is not None:
        if isinstance(event, RouteChanged):
            changes.append((event.old, event.new))
    assert changes == [(None, "refused"), ("refused", None)]


async def test_through_the_listener_the_client_sees_one_success(
    silent, start_engine, echo_origin
) -> None:
    text = config_text(routes={"hole": f"socks5://127.0.0.1:{silent.port}", "direct": "direct"})
    text += '\n[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n'
    engine = await start_engine(text)
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()
