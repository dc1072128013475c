"""Choosing a route for a connection: the staggered race, failover, health order, pins,
disabled routes, and the events that say the active route changed."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator

import pytest

from helper.config import parse_config
from helper.events import RouteChanged
from helper.routing import AllRoutesFailed, RouteHealth, Router
from helper.routing.router import CommandRefused
from helper.services import ProbeTarget
from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.peers import free_port
from transports import Endpoint, Failure, Op


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
    router.pin("local", "hole")
    with pytest.raises(AllRoutesFailed):
        await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    assert router.active_route(local).name == "hole"
    assert router.disable("hole") == ["local"]  # the pin goes with the route
    assert router.pins == {} and router.disabled == {"hole"}
    with pytest.raises(CommandRefused, match="hole is disabled"):
        router.pin("local", "hole")
    connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.abort()
    assert connection.route.name == "direct"
    with pytest.raises(CommandRefused, match="direct is the last enabled route of local"):
        router.disable("direct")
    assert router.disabled == {"hole"}


async def test_repeated_failures_change_the_active_route_and_ask_for_a_probe(echo_origin) -> None:
    from helper.events import EventBus

    router = router_for({"refused": f"socks5://127.0.0.1:{free_port()}", "direct": "direct"})
    router.events = EventBus()
    events = router.events.subscribe()
    router.health.set("local", "refused", RouteHealth(ok=True))
    router.note_health_change("test")
    failing: list[str] = []

    class Observer:
        def service_used(self, service) -> None:
            pass

        def route_failing(self, service, route: str) -> None:
            failing.append(route)

    router.observe(Observer())
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


# --- a route's timeout bounds the whole dial ------------------------------------------------


class SlowFirstAnswer:
    """A TCP forwarder in front of a real SOCKS5 server that holds back the first bytes the
    server sends on each connection (its greeting reply) for `delay` seconds: every SOCKS
    handshake through it is slow, but each one alone finishes within a per-layer timeout."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self.writers.append(up_writer)
            for pump in (self._pump(reader, up_writer, 0), self._pump(up_reader, writer, 1)):
                task = asyncio.create_task(pump)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: int
    ) -> None:
        first = direction == 1  # from the SOCKS server to the client
        try:
            while chunk := await reader.read(65536):
                if first:
                    await asyncio.sleep(self.delay)
                    first = False
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


ROUTE_TIMEOUT = 1.0
# Each SOCKS handshake through the forwarder takes this long: under the per-layer timeout
# (which is the route's timeout too), so only the route's overall deadline can cut a chain
# of two of them short.
HANDSHAKE_DELAY = 0.8 * ROUTE_TIMEOUT


@pytest.fixture
async def slow_socks() -> AsyncIterator[int]:
    with peers.microsocks() as socks:
        forwarder = SlowFirstAnswer(socks.address, HANDSHAKE_DELAY)
        port = await forwarder.start()
        yield port
        await forwarder.stop()


def two_slow_hops(port: int) -> str:
    return f"socks5://127.0.0.1:{port} | socks5://127.0.0.1:{port}"


async def test_a_route_timeout_bounds_the_whole_chain(slow_socks, echo_origin) -> None:
    router = router_for({"slow": two_slow_hops(slow_socks)}, timeout=f"{ROUTE_TIMEOUT:g}s")
    async with asyncio.timeout(10 * ROUTE_TIMEOUT):  # a safety net, not a measurement
        with pytest.raises(AllRoutesFailed) as caught:
            await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    [(name, error)] = caught.value.attempts
    assert name == "slow"
    assert error.failure is Failure.TIMEOUT
    assert error.op is Op.PROXY_HANDSHAKE
    # The route's deadline cut it, not a layer's own timeout ("proxy ... did not answer").
    assert error.detail == (f"route 'slow' did not connect within {ROUTE_TIMEOUT:g}s")


async def test_a_route_out_of_time_fails_over_to_the_next(slow_socks, echo_origin) -> None:
    from helper.events import DialFailed, EventBus

    # A long stagger: the next route starts only when the slow one has failed.
    router = router_for(
        {"slow": two_slow_hops(slow_socks), "direct": "direct"},
        timeout=f"{ROUTE_TIMEOUT:g}s",
        stagger="30s",
    )
    router.events = EventBus()
    events = router.events.subscribe()
    async with asyncio.timeout(10 * ROUTE_TIMEOUT):
        connection = await router.connect(Endpoint("127.0.0.1", echo_origin.port))
    connection.stream.write(b"ping")
    assert await connection.stream.readexactly(4) == b"ping"
    connection.stream.abort()
    assert connection.route.name == "direct"
    failed = []
    while (event := events.get_nowait()) is not None:
        if isinstance(event, DialFailed):
            failed.append((event.route, event.failure, event.op))
    assert failed == [("slow", "generic_timeout_error", "proxy_handshake")]
    assert router.health.get("local", "slow").dial_failures == 1


async def test_a_route_out_of_time_while_resolving_says_resolve(echo_origin) -> None:
    # A DNS server that never answers: the route's own resolver would wait its 5 s.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        dns_port = silent.getsockname()[1]
        router = router_for(
            {"own-dns": f"resolve:udp=127.0.0.1:{dns_port}"}, timeout=f"{ROUTE_TIMEOUT:g}s"
        )
        async with asyncio.timeout(10 * ROUTE_TIMEOUT):
            with pytest.raises(AllRoutesFailed) as caught:  # no service: the default route
                await router.connect(Endpoint("silent.test", echo_origin.port))
    finally:
        silent.close()
    [(name, error)] = caught.value.attempts
    assert name == "own-dns"
    assert error.failure is Failure.TIMEOUT
    assert error.op is Op.RESOLVE
    assert "route 'own-dns'" in error.detail


async def test_the_probe_reports_a_route_out_of_time_like_the_router(
    slow_socks, echo_origin
) -> None:
    from helper.probe.probe import Prober

    router = router_for({"slow": two_slow_hops(slow_socks)}, timeout=f"{ROUTE_TIMEOUT:g}s")
    probe = ProbeTarget.parse(f"tcp://127.0.0.1:{echo_origin.port}")
    service = dataclasses.replace(router.services.services[0], probes=(probe,))
    prober = Prober(timeout=10 * ROUTE_TIMEOUT)  # the probe's own timeout is much longer
    result = await prober.probe(service, router.route("slow"))
    [target] = result.targets
    assert target.failure is Failure.TIMEOUT
    assert target.op is Op.PROXY_HANDSHAKE
    assert target.detail.startswith("route 'slow' did not connect within")
