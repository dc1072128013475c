"""UDP through the fronted tunnel (transports/fronted/datagrams.py, helper/relay/udp.py)
against a real `detour relay` on loopback: a SOCKS5 client's datagrams through detour's
listener, a `front:` route, the relay and the lab's UDP echo, 10,000 of them with loss and
reordering counted; datagrams batched into the tunnel's writes; the relay's destination
policy and limits; an older relay; the idle timeout; and the capped carriers behind a
censor that freezes flows after 16 KB."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from helper.lab.udpmocks import UdpEcho, start_udp
from helper.relay import server as relay_server
from helper.routing import Route, Router
from helper.services import ServiceTable
from tests.integration.test_fronted import relay  # noqa: F401 (a fixture)
from tests.integration.test_fronted_capped import Frozen, frozen  # noqa: F401 (a fixture)
from tests.support.listeners import mixed_listener
from tests.support.relays import ANY, Relay, censored_front, relay_behind_a_front, running_relay
from tests.support.sizes import count
from tests.support.udp import associate, pysocks_echo
from tests.support.udpecho import Inbox, echo_run
from tests.support.waiting import until
from transports import DialError, DialOptions, Endpoint, parse_chain
from transports.datagram import datagram_dialer
from transports.fronted.datagrams import FrontDatagrams


@pytest.fixture
async def echo():
    server = await start_udp(UdpEcho())
    yield server
    server.close()


def front_route(stood: Relay, options: str = "", key=None):
    chain = parse_chain("front:" + (key or stood.key).encode() + options)
    dialer = chain.build(DialOptions(tls=stood.ca.client_context(), handshake_timeout=3))
    return chain, dialer


@contextlib.asynccontextmanager
async def listening_through(stood: Relay) -> AsyncIterator[int]:
    """detour's mixed listener with the relay's front: route as its only route: its port."""
    chain, dialer = front_route(stood)
    router = Router([Route("front", chain, dialer)], ServiceTable([]), "front")
    try:
        async with mixed_listener(router) as port:
            yield port
    finally:
        await dialer.aclose()


@pytest.mark.slow  # 10,000 round trips: ~10-30 s on a busy machine
async def test_socks5_udp_through_the_tunnel_10000_datagrams(tmp_path, test_ca, echo) -> None:
    """client --SOCKS5 UDP--> detour --front:--> relay --UDP--> echo, and back: 10,000
    datagrams (2,500 in make test: tests/support/sizes.py)."""
    datagrams = count(10_000, dev=2_500)
    async with running_relay(tmp_path, test_ca) as stood, listening_through(stood) as port:
        client = await associate(("127.0.0.1", port))
        try:

            async def receive() -> bytes:
                payload, source = await client.receive()
                assert source == echo.address
                return payload

            result = await echo_run(
                lambda data: client.send(data, echo.address), receive, datagrams,
                sizes=(60, 1200, 1472 - 10), patience=15.0,
            )  # fmt: skip
            # (patience: a datagram late behind a busy machine's pause is not a lost one.)
            assert result.corrupt == 0 and result.duplicates == 0
            # Loopback UDP on both sides of a reliable tunnel: nothing lost, in order.
            assert result.lost == 0, result
            assert result.reordered == 0
            assert stood.server.udp.counters.up == datagrams
        finally:
            await client.close()


async def test_pysocks_client_through_the_tunnel(tmp_path, test_ca, echo) -> None:
    """A real SOCKS5 client (PySocks' SOCK_DGRAM socket) through detour's front: route."""
    async with running_relay(tmp_path, test_ca) as stood, listening_through(stood) as port:
        payloads = [b"one", bytes(range(256)) * 5, b"\0" * 1400]
        address = ("127.0.0.1", port)
        answers = await asyncio.to_thread(pysocks_echo, address, echo.address, payloads)
        assert answers == payloads
        assert stood.server.udp.counters.up == len(payloads)


async def test_datagrams_keep_their_boundaries_up_to_the_path_mtu(tmp_path, test_ca, echo) -> None:
    async with running_relay(tmp_path, test_ca) as stood:
        chain, dialer = front_route(stood)
        datagrams = datagram_dialer("front", chain, dialer)
        assert isinstance(datagrams, FrontDatagrams)
        inbox = Inbox()
        session = datagrams.open(inbox)
        try:
            await session.prepare(echo.address)
            for size in (1, 2, 512, 1400, 1472, 8192, 65000):
                payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
                session.send(payload, echo.address)
                assert await inbox.get() == (payload, echo.address)
            assert len(dialer.sessions) == 1
        finally:
            session.close()
            await dialer.aclose()


async def test_datagrams_of_consecutive_turns_share_a_write(tmp_path, test_ca, echo) -> None:
    """A datagram per turn of the event loop (a burst as the listener reads it, one a turn):
    the records go into the tunnel a batch per write, every datagram back intact, in order;
    the relay batches toward the client the same way."""
    async with running_relay(tmp_path, test_ca) as stood:
        chain, dialer = front_route(stood)
        datagrams = datagram_dialer("front", chain, dialer)
        inbox = Inbox()
        session = datagrams.open(inbox)
        try:
            await session.prepare(echo.address)
            sent = [bytes([i % 256]) * (1 + i * 7 % 1400) for i in range(200)]
            for payload in sent:
                session.send(payload, echo.address)
                await asyncio.sleep(0)  # the next one a turn later
            got = [(await inbox.get())[0] for _ in sent]
            assert got == sent
            writer = session._writer
            assert writer is not None and writer.writes <= len(sent) // 4, writer.writes
            counters = stood.server.udp.counters
            assert counters.down == 200 and 1 <= counters.writes_down <= 200
        finally:
            session.close()
            await dialer.aclose()


async def test_the_relay_refuses_what_it_refuses_tcp(tmp_path, test_ca, echo) -> None:
    """`allow = "services"`: a destination that is no service gets nothing; private and
    this machine's addresses never (the policy of TCP streams)."""
    services = f"""
[[service]]
name = "calls"
cidrs = ["127.0.0.1/32"]
ports = [{echo.address.port}]
[destinations]
public = ["127.0.0.0/8"]
"""
    async with running_relay(tmp_path, test_ca, services) as stood:
        chain, dialer = front_route(stood)
        inbox = Inbox()
        session = FrontDatagrams(dialer).open(inbox)
        other = await start_udp(UdpEcho())
        try:
            await session.prepare(echo.address)
            session.send(b"allowed", echo.address)
            assert await inbox.get() == (b"allowed", echo.address)
            for target in (other.address, Endpoint("10.1.2.3", 53), Endpoint("192.168.1.1", 9)):
                session.send(b"refused", target)
            await until(lambda: stood.server.udp.counters.refused == 3)
            assert other.received == 0 and inbox.queue.empty()
            session.send(b"still", echo.address)
            assert await inbox.get() == (b"still", echo.address)
        finally:
            other.close()
            session.close()
            await dialer.aclose()


async def test_an_older_relay_says_it_carries_no_udp(tmp_path, test_ca, monkeypatch) -> None:
    """A relay from before UDP sees the association as a destination it refuses: the client
    says the relay carries no UDP, at once, and the tunnel stays up for TCP."""
    monkeypatch.setattr(relay_server, "ASSOCIATE", Endpoint("not.this.invalid", 1))
    async with running_relay(tmp_path, test_ca, '[destinations]\nallow = "any"\n') as stood:
        chain, dialer = front_route(stood)
        session = FrontDatagrams(dialer).open(Inbox())
        try:
            with pytest.raises(DialError, match="the relay carries no UDP"):
                async with asyncio.timeout(10):
                    await session.prepare(Endpoint("127.0.0.1", 9))
            assert dialer.sessions and dialer.sessions[0].alive
        finally:
            session.close()
            await dialer.aclose()


async def test_mux_off_carries_no_udp(tmp_path, test_ca) -> None:
    async with running_relay(tmp_path, test_ca) as stood:
        chain, dialer = front_route(stood, ";mux=off")
        session = FrontDatagrams(dialer).open(Inbox())
        with pytest.raises(DialError, match="multiplexed"):
            await session.prepare(Endpoint("127.0.0.1", 9))


async def test_idle_association_ends_and_the_next_datagram_opens_one(
    tmp_path, test_ca, echo
) -> None:
    async with running_relay(tmp_path, test_ca, 'idle_timeout = "0.3s"\n' + ANY) as stood:
        chain, dialer = front_route(stood)
        inbox = Inbox()
        session = FrontDatagrams(dialer).open(inbox)
        try:
            await session.prepare(echo.address)
            session.send(b"one", echo.address)
            assert (await inbox.get())[0] == b"one"
            await until(lambda: stood.server.udp.associations == 0)
            await until(lambda: not session.ready(echo.address))
            await session.prepare(echo.address)
            session.send(b"two", echo.address)
            assert (await inbox.get())[0] == b"two"
        finally:
            session.close()
            await dialer.aclose()


async def test_associations_count_against_the_client_limit(tmp_path, test_ca, echo) -> None:
    limits = "connections_per_client = 2\n" + ANY
    async with running_relay(tmp_path, test_ca, limits) as stood:
        chain, dialer = front_route(stood)
        sessions = [FrontDatagrams(dialer).open(Inbox()) for _ in range(3)]
        try:
            for session in sessions[:2]:
                await session.prepare(echo.address)
            with pytest.raises(DialError, match="2 connections open"):
                await sessions[2].prepare(echo.address)
        finally:
            for session in sessions:
                session.close()
            await dialer.aclose()


async def test_udp_through_capped_carriers_behind_a_freezing_censor(
    frozen: Frozen,  # noqa: F811
    echo,
) -> None:
    dialer = frozen.dialer(";carrier=capped")
    inbox = Inbox()
    session = FrontDatagrams(dialer).open(inbox)
    try:
        await session.prepare(echo.address)

        async def receive() -> bytes:
            return (await inbox.get())[0]

        result = await echo_run(
            lambda data: session.send(data, echo.address), receive, 400, sizes=(200, 1200)
        )
        assert result.lost == 0 and result.corrupt == 0 and result.reordered == 0, result
        assert frozen.carriers() > 10  # ~0.5 MB both ways through 16 KB carriers
    finally:
        session.close()
        await dialer.aclose()


@pytest.mark.peer
@pytest.mark.slow  # capped carriers through nginx: ~5-15 s on a busy machine
async def test_udp_through_nginx_as_the_front(tmp_path, test_ca, echo) -> None:
    """nginx is the CDN edge (TLS for the front name, WebSocket upgrades passed on by Host):
    datagrams through it in a long tunnel, and in capped carriers behind a censor that
    freezes every flow after 16 KB."""
    async with (
        relay_behind_a_front(tmp_path) as (_, keys, relay_port),
        censored_front(test_ca, relay_port, 16 * 1024) as (edge, port),
    ):
        for address, options in (
            (Endpoint("127.0.0.1", edge.port), ""),
            (Endpoint("127.0.0.1", port), ";carrier=capped"),
        ):
            key = keys.add_client(f"c{len(options)}", address, "cdn.test", "relay.test")
            dialer = parse_chain("front:" + key.encode() + options).build(
                DialOptions(tls=test_ca.client_context(), handshake_timeout=5)
            )
            inbox = Inbox()
            session = FrontDatagrams(dialer).open(inbox)
            try:
                await session.prepare(echo.address)

                async def receive(inbox=inbox) -> bytes:
                    return (await inbox.get())[0]

                result = await echo_run(
                    lambda data, session=session: session.send(data, echo.address),
                    receive,
                    300,
                    sizes=(200, 1400),
                )
                assert result.lost == 0 and result.corrupt == 0, (options, result)
            finally:
                session.close()
                await dialer.aclose()
