"""Handshake pacing for the fronted tunnel, counted at the front: a real nginx edge with a
tap in front of it that times every TLS handshake by server name (from the ClientHello to
the client's Finished). A burst of 100 new connections without multiplexing and a full probe
through the route, in one engine: never more handshakes to the front's name than the budget
allows (in flight at once, within a window, closer than the gap)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helper.relay.keys import RelayKeys
from tests.conftest import config_text
from tests.support import origins
from tests.support.relays import (
    forward_reading_tls,
    nginx_front,
    relay_behind_a_front,
    serving,
)
from tests.support.waiting import loop_lag
from transports import Endpoint
from transports.tlsfrag import server_name

pytestmark = pytest.mark.peer

LIMIT, WINDOW, GAP = 3, 0.4, 0.1  # a quicker budget than the default's, with its rules
JITTER = 0.05


@dataclass
class Handshake:
    name: str | None
    started: float  # the ClientHello arrived
    ended: float | None = None  # the client's Finished arrived


@dataclass
class Tap:
    """A TCP forwarder in front of the edge that reads the client's TLS records."""

    upstream: int
    handshakes: list[Handshake] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        handshake: Handshake | None = None

        def on_record(record: bytes) -> bool:
            nonlocal handshake
            if handshake is None and record[0] == 0x16:
                handshake = Handshake(server_name(record[5:]), loop.time())
                self.handshakes.append(handshake)
            elif handshake is not None and record[0] == 0x17:
                handshake.ended = loop.time()  # TLS 1.3: the client's Finished
                return True
            return False

        await forward_reading_tls(reader, writer, self.upstream, on_record)

    def of(self, name: str) -> list[Handshake]:
        return [h for h in self.handshakes if h.name == name]


@contextlib.asynccontextmanager
async def tap(upstream: int) -> AsyncIterator[Tap]:
    counter = Tap(upstream)
    async with serving(counter.handle) as counter.port:
        yield counter


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[RelayKeys, int]]:
    hosts = '[dns]\nhosts = { "origin.test" = ["127.0.0.1"] }\n'
    async with relay_behind_a_front(tmp_path, hosts) as (_, keys, port):
        yield keys, port


def check_budget(handshakes: list[Handshake], lag: float = 0.0) -> None:
    starts = sorted(h.started for h in handshakes)
    # Kept at the client; what reaches the front can come a little closer (a loaded loop
    # between the budget's start and the ClientHello's arrival): JITTER of slack, more when
    # the loop was seen to wake up later than that.
    slack = max(JITTER, lag)
    closest = min((b - a for a, b in itertools.pairwise(starts)), default=1.0)
    assert closest >= GAP - slack, (slack, starts)
    for i, first in enumerate(starts):
        assert len([t for t in starts[i:] if t < first + WINDOW - slack]) <= LIMIT, starts
    for handshake in handshakes:
        assert handshake.ended is not None  # every tunnel opened
        during = [
            h
            for h in handshakes
            if h.started <= handshake.started < (h.ended or float("inf")) and h is not handshake
        ]
        assert len(during) < LIMIT, "more handshakes under way at once than the budget"


@pytest.mark.parametrize(
    "burst", [20, pytest.param(100, marks=pytest.mark.slow)], ids=["20", "100"]
)
async def test_a_burst_and_a_probe_keep_the_budget_at_the_front(
    relay, test_ca: origins.TestCA, echo_origin, integrity_origin, start_engine, burst: int
) -> None:
    keys, relay_port = relay
    with nginx_front(test_ca, relay_port) as edge:
        async with tap(edge.port) as counter:
            key = keys.add_client("alice", Endpoint("127.0.0.1", counter.port), "cdn.test",
                                  "relay.test")  # fmt: skip
            text = config_text(
                routes={"front": f"front:{key.encode()};mux=off"},
                extra=f"""
                [tls]
                extra_ca = ["{test_ca.ca_path}"]
                [probe]
                handshakes = {LIMIT}
                handshake_window = "{WINDOW}s"
                handshake_gap = "{GAP}s"
                timeout = "30s"
                [[service]]
                name = "echo"
                cidrs = ["127.0.0.0/8"]
                probes = ["tcp://127.0.0.1:{echo_origin.port}",
                          "tcp://127.0.0.1:{integrity_origin.port}",
                          "tcp://origin.test:{echo_origin.port}"]
                """,
            )
            engine = await start_engine(text, probe_on_start=False)
            route = engine.router.route("front")

            async def one(i: int) -> None:
                stream = await route.dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
                stream.write(b"%03d" % i)
                await stream.drain()
                assert await stream.readexactly(3) == b"%03d" % i
                stream.close()

            service = engine.router.services.services[0]
            # The probe first: a probe that has to wait behind a hundred connections' turns
            # would run out of its route's time (the price of pacing without multiplexing).
            probe = asyncio.ensure_future(engine.monitor.probe_now(service))
            await asyncio.sleep(0.01)
            async with loop_lag() as lag:
                await asyncio.gather(*(one(i) for i in range(burst)), probe)
            (result,) = [r for (s, _), r in engine.monitor.probe_status()[0].items() if s == "echo"]
            assert result.ok, result

    handshakes = counter.of("cdn.test")
    assert len(handshakes) >= burst + 3  # one per connection and per probe target: no multiplexing
    check_budget(handshakes, lag[0])
    assert engine.budget.held > 0  # it did hold handshakes back
