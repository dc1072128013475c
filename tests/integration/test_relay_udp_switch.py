"""The relay's UDP switch (`[relay] udp`, helper/relay/config.py) and its UDP counters
(helper/relay/udp.py): off, a client's association is refused with the relay's reason and the
tunnel stays up for TCP; on, the counters count associations and datagrams, and the relay's
summary line says them, while they change and when it stops."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from helper.config import ConfigError
from helper.lab.udpmocks import UdpEcho, start_udp
from helper.relay.config import parse_relay_config
from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from tests.integration.test_fronted_udp import front_route
from tests.support.relays import ANY, Relay, relay_config
from tests.support.udpecho import Inbox
from tests.support.waiting import until
from transports import DialError, Endpoint
from transports.fronted.datagrams import FrontDatagrams

BASE = '[relay]\nlisten = "127.0.0.1:8080"\nstate = "state"\n[destinations]\nallow = "any"\n'


def test_the_switch_is_on_by_default_and_read() -> None:
    assert parse_relay_config(BASE).udp is True
    text = BASE.replace('state = "state"\n', 'state = "state"\nudp = false\n')
    assert parse_relay_config(text).udp is False


def test_a_bad_value_names_the_key() -> None:
    text = BASE.replace('state = "state"\n', 'state = "state"\nudp = "no"\n')
    with pytest.raises(ConfigError, match=r"relay\.udp"):
        parse_relay_config(text)


async def _relay(tmp_path, ca, *, udp: bool, report: float | None = None) -> Relay:
    config = dataclasses.replace(relay_config(tmp_path, ca, ANY), udp=udp)
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    if report is not None:
        server.udp.report_interval = report
    _, port = await server.start()
    key = keys.add_client("alice", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
    return Relay(server, keys, port, key, ca)


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


async def test_udp_off_refuses_the_association_and_keeps_the_tunnel(
    tmp_path, test_ca, echo, caplog
) -> None:
    caplog.set_level(logging.INFO, "detour.relay")
    stood = await _relay(tmp_path, test_ca, udp=False)
    chain, dialer = front_route(stood)
    session = FrontDatagrams(dialer).open(Inbox())
    try:
        with pytest.raises(DialError, match=r"the relay carries no UDP \(.*UDP is off"):
            async with asyncio.timeout(10):
                await session.prepare(echo.address)
        assert dialer.sessions and dialer.sessions[0].alive  # TCP goes on in the tunnel
        counters = stood.server.udp.counters
        assert (counters.associations, counters.associations_refused) == (0, 1)
        assert echo.received == 0
    finally:
        session.close()
        await dialer.aclose()
        await stood.server.stop(grace=0.5)
    said = [r.getMessage() for r in caplog.records]
    assert "relay: UDP off (relay.udp = false): 0 associations (0 open, 1 refused)" in " ".join(
        said
    )


async def test_the_counters_and_the_summary(tmp_path, test_ca, echo, caplog) -> None:
    caplog.set_level(logging.INFO, "detour.relay")
    stood = await _relay(tmp_path, test_ca, udp=True)
    chain, dialer = front_route(stood)
    inbox = Inbox()
    session = FrontDatagrams(dialer).open(inbox)
    try:
        await session.prepare(echo.address)
        for i in range(5):
            session.send(b"%d" % i, echo.address)
            assert (await inbox.get())[0] == b"%d" % i
        session.send(b"no", Endpoint("10.1.2.3", 53))  # private: refused
        counters = stood.server.udp.counters
        await until(lambda: counters.refused == 1)
        assert (counters.associations, counters.up, counters.down) == (1, 5, 5)
    finally:
        session.close()
        await dialer.aclose()
        await stood.server.stop(grace=0.5)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "relay: UDP on: 1 associations" in said and "5 datagrams up, 5 down" in said


async def test_the_counters_go_to_the_log_while_they_change(
    tmp_path, test_ca, echo, caplog
) -> None:
    """The relay has no status page: its UDP counters are a log line every report interval,
    none while nothing changed, and the last one when it stops."""
    caplog.set_level(logging.INFO, "detour.relay")
    stood = await _relay(tmp_path, test_ca, udp=True, report=0.05)
    udp = stood.server.udp
    chain, dialer = front_route(stood)
    inbox = Inbox()
    session = FrontDatagrams(dialer).open(inbox)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "datagrams up" in r.getMessage()]

    try:
        await session.prepare(echo.address)
        for i in range(3):
            session.send(b"%d" % i, echo.address)
            assert (await inbox.get())[0] == b"%d" % i
        # All three came back: their writes are done, and the counters stay as they are.
        writes = udp.counters.writes_down
        assert 1 <= writes <= 3  # records toward the client, batched
        said = f"3 datagrams up, 3 down in {writes} writes"
        await until(lambda: bool(lines()) and said in lines()[-1])
        assert not udp.report()  # nothing new since the last line: no line
        session.send(b"more", echo.address)
        await inbox.get()
        await until(lambda: any("4 datagrams up, 4 down" in line for line in lines()))
    finally:
        session.close()
        await dialer.aclose()
        await stood.server.stop(grace=0.5)
    assert udp._reporter is None and "4 datagrams up, 4 down" in lines()[-1]
