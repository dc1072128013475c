"""UDP limits and lifetime: the [listen] udp_* keys (errors name the key), an association
that goes silent ends after listen.udp_idle_timeout (its TCP connection closed with it), and
one client may hold at most listen.udp_associations_per_client associations."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from helper.config import ConfigError, parse_config
from helper.lab.udpmocks import UdpEcho, start_udp
from helper.proxy.udp import UdpLimits
from tests.conftest import config_text
from tests.support.udp import associate

ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'


def _config(listen: str):
    return parse_config(textwrap.dedent(listen) + "\n" + ROUTE, "test.toml")


def test_udp_keys_read_into_limits() -> None:
    config = _config(
        """
        [listen]
        udp_idle_timeout = "30s"
        udp_in_flight = 8
        udp_in_flight_total = 0
        udp_associations_per_client = 2
        """
    )
    limits = UdpLimits.from_listen(config.listen)
    assert limits == UdpLimits(in_flight=8, in_flight_total=0, per_client=2, idle=30.0)


def test_udp_defaults() -> None:
    limits = UdpLimits.from_listen(_config("").listen)
    assert (limits.in_flight, limits.in_flight_total, limits.per_client, limits.idle) == (
        256,
        4096,
        32,
        120.0,
    )


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('udp_idle_timeout = "soon"', "listen.udp_idle_timeout"),
        ("udp_idle_timeout = 0", "listen.udp_idle_timeout"),
        ("udp_in_flight = -1", "listen.udp_in_flight"),
        ('udp_in_flight_total = "many"', "listen.udp_in_flight_total"),
        ("udp_associations_per_client = 1.5", "listen.udp_associations_per_client"),
    ],
)
def test_bad_udp_keys_name_the_key(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(f"[listen]\n{line}\n")
    assert any(problem.startswith(key) for problem in err.value.problems), err.value.problems


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.01)


def _listener(engine):
    return next(lst for lst in engine.server.listeners if lst.kind == "mixed")


async def test_silent_association_ends_after_the_idle_timeout(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    listener = _listener(engine)
    listener.udp.limits.idle = 0.5
    client = await associate(engine.mixed_address)
    try:
        # Each datagram either way counts as use...
        association = next(iter(listener.udp.associations))
        for _ in range(4):
            before = association.used
            assert await client.echo(b"hi", echo.address) == b"hi"
            assert association.used > before
        # ... silence ends it, and the control connection with it.
        await _wait_for(lambda: not listener.udp.associations)
        assert listener.udp.idle_ended == 1
        assert await asyncio.wait_for(client.reader.read(1), 5) == b""
    finally:
        await client.close()
    totals = listener.udp.totals()
    assert totals.up == 4 and totals.down == 4
    assert totals.bytes_up == 8 and totals.bytes_down == 8


async def test_associations_per_client_limit(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    listener = _listener(engine)
    listener.udp.limits.per_client = 2
    first = await associate(engine.mixed_address)
    second = await associate(engine.mixed_address)
    try:
        with pytest.raises(AssertionError):
            await associate(engine.mixed_address)  # refused: REP 0x02, not allowed
        assert listener.udp.refused == 1
        assert await first.echo(b"a", echo.address) == b"a"
    finally:
        await second.close()
    await _wait_for(lambda: len(listener.udp.associations) == 1)
    third = await associate(engine.mixed_address)  # one ended: room again
    try:
        assert await third.echo(b"b", echo.address) == b"b"
    finally:
        await third.close()
        await first.close()
    assert listener.udp.opened == 3


async def test_transparent_flows_limits_and_idle_end(start_engine) -> None:
    """Transparent UDP (no control connection): flows per device address are limited, and
    a device's flows end after the idle timeout (driven without the TPROXY socket, which
    needs root: tests/router/test_udp_tproxy.py runs it whole)."""
    from helper.proxy.tproxy_udp import TransparentUdp
    from transports import Endpoint

    engine = await start_engine(config_text())
    listener = _listener(engine)
    listener.udp.limits.per_client = 2
    listener.udp.limits.idle = 30.0
    transparent = TransparentUdp(Endpoint("127.0.0.1", 0), engine.server, listener)
    budget = transparent.budget
    assert budget.limits.per_client == 2  # the listener's limits ([listen] udp_*)
    try:
        first = transparent._admit(("192.0.2.7", 4000))
        second = transparent._admit(("192.0.2.7", 4001))
        assert first is not None and second is not None
        assert transparent._admit(("192.0.2.7", 4002)) is None  # a third port: refused
        assert transparent._admit(("192.0.2.8", 4000)) is not None  # another device
        assert (budget.opened, budget.refused) == (3, 1)
        first.used -= 60  # silent for longer than the idle timeout
        transparent._sweep()
        assert set(transparent.clients) == {("192.0.2.7", 4001), ("192.0.2.8", 4000)}
        assert budget.idle_ended == 1
        view = budget.view("transparent-udp")
        assert (view.open, view.opened, view.refused, view.idle_ended) == (2, 3, 1, 1)
    finally:
        transparent.stop()


async def test_associations_asked_at_once_are_counted_at_once(start_engine) -> None:
    engine = await start_engine(config_text())
    listener = _listener(engine)
    listener.udp.limits.per_client = 2
    outcomes = await asyncio.gather(
        *(associate(engine.mixed_address) for _ in range(4)), return_exceptions=True
    )
    clients = [c for c in outcomes if not isinstance(c, BaseException)]
    try:
        assert len(clients) == 2
        assert all(isinstance(c, AssertionError) for c in outcomes if c not in clients)
        assert listener.udp.refused == 2
    finally:
        for client in clients:
            await client.close()
