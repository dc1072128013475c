"""The capped mode of `front:` (transports/fronted/capped.py) end to end on loopback, through
a censor that freezes every flow to the relay after 16 KB from the server: the bytes intact
(sha256) through many short carriers, many connections at once, and the auto mode's switch
from a long tunnel that froze to capped carriers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from helper.lab.censor import Censor, Policy, Rule
from tests.integration.test_fronted import relay  # noqa: F401 (a fixture)
from tests.integration.test_fronted_cdn import _as_asyncio_streams
from tests.support.integrity import run_integrity
from tests.support.peers import free_port
from tests.support.relays import Relay, censored_front, relay_behind_a_front
from transports import DialOptions, Endpoint, parse_chain

FREEZE_AFTER = 16 * 1024


@dataclasses.dataclass
class Frozen:
    relay: Relay
    censor: Censor
    port: int

    def dialer(self, options: str = ";carrier=capped"):
        key = self.relay.key.with_overrides(address=Endpoint("127.0.0.1", self.port))
        chain = parse_chain("front:" + key.encode() + options)
        return chain.build(DialOptions(tls=self.relay.ca.client_context(), handshake_timeout=5))

    def carriers(self) -> int:
        return len(self.censor.events)


@pytest.fixture
async def frozen(relay: Relay) -> AsyncIterator[Frozen]:  # noqa: F811
    port = free_port()
    censor = Censor(
        {("127.0.0.1", port): ("127.0.0.1", relay.port)},
        Policy(rules=(Rule("freeze", name="16 KB", after=FREEZE_AFTER),), name="freeze"),
    )
    await censor.start()
    yield Frozen(relay, censor, port)
    await censor.stop()


async def _exchange(dialer, origin_port: int, size: int) -> None:
    stream = await dialer.dial(Endpoint("127.0.0.1", origin_port))
    reader, writer = await _as_asyncio_streams(stream)
    result = await run_integrity(reader, writer, up=size, down=size, half_close=False)
    assert result.ok_up and result.ok_down
    writer.close()


async def test_echo_through_a_freezing_censor(frozen: Frozen, echo_origin) -> None:
    dialer = frozen.dialer()
    try:
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        payload = bytes(range(256)) * 200  # 50 KB: more than one carrier's budget each way
        stream.write(payload)
        await stream.drain()
        assert await stream.readexactly(len(payload)) == payload
        stream.close()
        assert frozen.carriers() > 3
    finally:
        await dialer.aclose()


async def test_carriers_beyond_the_relays_limit_are_refused_and_the_client_keeps_fewer(
    frozen: Frozen, integrity_origin
) -> None:
    hub = frozen.relay.server.carriers
    hub.per_session = 4  # `[limits] carriers_per_session`, under the client's pool of 6
    dialer = frozen.dialer()
    try:
        await _exchange(dialer, integrity_origin.port, 256 * 1024)
        assert hub.refused_carriers > 0
        tunnel = next(s.capped for s in _front(dialer).sessions)
        assert tunnel.pool < 4 and tunnel.carriers_lost == 0
        assert all(len(s.links) <= 4 for s in hub.sessions.values())
    finally:
        await dialer.aclose()


def _front(dialer):
    for _ in range(8):
        if hasattr(dialer, "sessions"):
            return dialer
        dialer = dialer.inner
    raise AssertionError("no FrontDialer in the chain")


@pytest.mark.slow
async def test_4mib_each_way_intact_through_a_freezing_censor(
    frozen: Frozen, integrity_origin
) -> None:
    dialer = frozen.dialer()
    try:
        await _exchange(dialer, integrity_origin.port, 4 * 1024 * 1024)
    finally:
        await dialer.aclose()


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_64mib_each_way_intact_through_a_freezing_censor(
    frozen: Frozen, integrity_origin, request: pytest.FixtureRequest
) -> None:
    if not request.config.getoption("--long"):
        pytest.skip("64 MiB each way through capped carriers takes minutes: run with --long")
    dialer = frozen.dialer()
    try:
        await _exchange(dialer, integrity_origin.port, 64 * 1024 * 1024)
    finally:
        await dialer.aclose()


@pytest.mark.slow
async def test_50_connections_at_once_through_a_freezing_censor(
    frozen: Frozen, integrity_origin
) -> None:
    dialer = frozen.dialer()
    try:
        await asyncio.gather(
            *(_exchange(dialer, integrity_origin.port, 64 * 1024) for _ in range(50))
        )
    finally:
        await dialer.aclose()


@pytest.mark.slow
async def test_auto_finds_the_freeze_on_a_long_tunnel_and_goes_capped(
    frozen: Frozen, echo_origin
) -> None:
    dialer = frozen.dialer(options="")  # auto, the default
    try:
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        payload = b"x" * (64 * 1024)
        stream.write(payload)
        await stream.drain()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            async with asyncio.timeout(30):
                await stream.readexactly(len(payload))
        assert dialer.carrier.frozen_after is not None
        assert dialer.carrier.frozen_after < 2 * FREEZE_AFTER
        # The next connection goes capped and gets through.
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        stream.write(payload)
        await stream.drain()
        async with asyncio.timeout(60):
            assert await stream.readexactly(len(payload)) == payload
        stream.close()
    finally:
        await dialer.aclose()


@pytest.mark.peer
async def test_through_nginx_as_the_front_behind_a_freezing_censor(
    tmp_path, test_ca, integrity_origin
) -> None:
    """nginx is the CDN edge (TLS for the front name, routing by Host, WebSocket upgrades
    passed on with the subprotocol); the censor freezes every flow to it after 16 KB. The
    carriers resume nginx's TLS sessions (no certificates after the first)."""
    async with (
        relay_behind_a_front(tmp_path) as (_, keys, relay_port),
        censored_front(test_ca, relay_port, FREEZE_AFTER) as (_, port),
    ):
        key = keys.add_client("bob", Endpoint("127.0.0.1", port), "cdn.test", "relay.test")
        dialer = parse_chain("front:" + key.encode() + ";carrier=capped").build(
            DialOptions(tls=test_ca.client_context(), handshake_timeout=5)
        )
        try:
            await _exchange(dialer, integrity_origin.port, 1024 * 1024)
            tunnel = dialer.sessions[0].capped
            assert tunnel.carriers_opened > 20
            assert dialer.carrier.resumed >= tunnel.carriers_opened - 2
        finally:
            await dialer.aclose()
