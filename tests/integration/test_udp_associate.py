"""SOCKS5 UDP ASSOCIATE on the mixed listener: datagrams through the direct route to a UDP
echo and a STUN server, the association's life tied to its TCP connection, and bad input
(malformed headers, fragments, foreign senders, floods) counted and dropped, never a
traceback."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from helper.lab.udpmocks import StunServer, UdpEcho, start_udp
from tests.conftest import config_text
from tests.support.udp import associate
from transports import Endpoint
from transports.stun import binding_request, parse_message


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.01)


def _assert_clean_log(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"traceback logged: {record.getMessage()}"
        assert record.levelno < logging.ERROR, f"error logged: {record.getMessage()}"


def _listener(engine):
    return next(lst for lst in engine.server.listeners if lst.kind == "mixed")


async def test_udp_echo_through_direct(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    client = await associate(engine.mixed_address)
    try:
        for size in (1, 100, 1400, 1472, 8000):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert await client.echo(payload, echo.address) == payload
    finally:
        await client.close()
    listener = _listener(engine)
    await _wait_for(lambda: not listener.udp.associations)
    totals = listener.udp.totals()
    assert totals.up == 5 and totals.down == 5 and totals.dropped == 0


async def test_reply_carries_the_source_address(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    client = await associate(engine.mixed_address)
    try:
        client.send(b"ping", echo.address)
        payload, source = await client.receive()
        assert (payload, source) == (b"ping", echo.address)
    finally:
        await client.close()


async def test_stun_binding_through_direct(start_engine) -> None:
    stun = await start_udp(StunServer())
    engine = await start_engine(config_text())
    client = await associate(engine.mixed_address)
    try:
        request, transaction = binding_request()
        answer = parse_message(await client.echo(request, stun.address))
        assert answer.transaction == transaction
        assert answer.mapped is not None and answer.mapped.host == "127.0.0.1"
    finally:
        await client.close()
        stun.close()


async def test_association_ends_with_its_tcp_connection(start_engine, echo) -> None:
    engine = await start_engine(config_text())
    client = await associate(engine.mixed_address)
    assert await client.echo(b"a", echo.address) == b"a"
    relay = client.relay
    client.writer.close()
    listener = _listener(engine)
    await _wait_for(lambda: not listener.udp.associations)
    await _wait_for(lambda: engine.server.open_connections == 0)
    # The relay socket is gone: the port can be bound again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(relay)
    await client.close()


async def test_bad_datagrams_are_counted_and_dropped(start_engine, echo, caplog) -> None:
    caplog.set_level(logging.INFO)
    engine = await start_engine(config_text())
    client = await associate(engine.mixed_address)
    listener = _listener(engine)
    try:
        client.send_raw(b"\x00\x00")  # shorter than a header
        client.send_raw(b"\x01\x00\x00\x01\x7f\x00\x00\x01\x00\x07")  # RSV not zero
        client.send_raw(b"\x00\x00\x00\x09abcdef")  # unknown ATYP
        client.send_raw(b"\x00\x00\x00\x03\x05ab")  # name cut short
        client.send(b"x", Endpoint("127.0.0.1", 0))  # port 0
        client.send(b"frag", echo.address, frag=1)  # a fragment
        association = next(iter(listener.udp.associations))
        await _wait_for(lambda: association.counters.malformed == 5)
        for burst in range(10):  # a flood of malformed datagrams (in bursts the kernel keeps)
            for _ in range(50):
                client.send_raw(b"\xff" * 30)
            await _wait_for(lambda b=burst: association.counters.malformed == 5 + 50 * (b + 1))
        # From another port of the same host: no association there.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            other.sendto(b"\0\0\0\x01\x7f\0\0\x01\0\x07x", client.relay)
        # The association still works.
        assert await client.echo(b"ok", echo.address) == b"ok"
        await _wait_for(lambda: association.counters.foreign == 1)
        counters = association.counters
        assert counters.malformed == 505
        assert counters.fragment == 1
        assert counters.up == 1 and counters.down == 1
        assert echo.received >= 1
    finally:
        await client.close()
    lines = [r for r in caplog.records if "UDP datagram dropped" in r.getMessage()]
    assert len(lines) < 100, "drops are logged at a throttled rate"
    _assert_clean_log(caplog)


async def test_in_flight_limit(start_engine, caplog) -> None:
    """Datagrams waiting for a route (here: an upstream that never answers) are bounded."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    engine = await start_engine(config_text(routes={"up": f"socks5://127.0.0.1:{port}"}))
    listener = _listener(engine)
    listener.udp.limits.in_flight = 10
    client = await associate(engine.mixed_address)
    try:
        for i in range(50):
            client.send(b"%d" % i, Endpoint("127.0.0.1", 9))
        await _wait_for(lambda: listener.udp.totals().over_limit == 40)
        assert listener.udp.in_flight == 10
    finally:
        await client.close()
        silent.close()
    await _wait_for(lambda: listener.udp.in_flight == 0)
    _assert_clean_log(caplog)


async def test_tcp_only_route_says_so(start_engine, caplog) -> None:
    caplog.set_level(logging.INFO)
    engine = await start_engine(config_text(routes={"web": "http://127.0.0.1:3128"}))
    client = await associate(engine.mixed_address)
    listener = _listener(engine)
    try:
        client.send(b"x", Endpoint("127.0.0.1", 9))
        await _wait_for(lambda: listener.udp.totals().no_route == 1)
    finally:
        await client.close()
    assert any(
        "route 'web'" in r.getMessage() and "carries no UDP" in r.getMessage()
        for r in caplog.records
    )


async def test_lan_client_policy_applies_to_datagrams(start_engine, echo) -> None:
    """A client not on this machine may not send datagrams to loopback or private
    addresses (the listener's destination policy)."""
    engine = await start_engine(config_text())
    listener = _listener(engine)
    listener.local_clients = ()  # every client counts as a LAN client
    client = await associate(engine.mixed_address)
    try:
        client.send(b"x", echo.address)
        await _wait_for(lambda: listener.udp.totals().refused == 1)
        assert echo.received == 0
    finally:
        await client.close()


async def test_login_required_for_udp(start_engine, echo) -> None:
    extra = '[[listen.users]]\nname = "alice"\npassword = "pw-1234"\n'
    engine = await start_engine(config_text(extra=extra))
    with pytest.raises(AssertionError):
        await associate(engine.mixed_address)
    client = await associate(engine.mixed_address, username="alice", password="pw-1234")
    try:
        assert await client.echo(b"hi", echo.address) == b"hi"
    finally:
        await client.close()
