"""The capped mode's early hello (the hello sent with the upgrade, transports/fronted/capped.py)
end to end: through real nginx as the front, with a tap in front of nginx that counts what
the front sends on every connection and times every TLS handshake, while the answer to the
upgrade grows and shrinks (as a CDN's may) -- no connection ever carries more than the
budget from the front, and no more handshakes are under way at once than the carriers'
limit; and the negotiation: a new client with a relay from before the early hello, and a
client from before it with a new relay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helper.http_server import Upgrade
from helper.relay.server import RelayServer
from tests.integration.test_fronted import relay  # noqa: F401 (a fixture)
from tests.integration.test_fronted_capped import Frozen, _exchange, _front, frozen  # noqa: F401
from tests.support.relays import (
    forward_reading_tls,
    nginx_front,
    relay_behind_a_front,
    serving,
)
from transports import DialOptions, Endpoint, parse_chain
from transports.fronted.capped import CARRIER_PROTOCOL, DEFAULT_BUDGET, HANDSHAKES, HOLD
from transports.wire import ProtocolError

JITTER = 0.05


@dataclasses.dataclass
class Connection:
    from_front: int = 0  # bytes, what a censor on the path counts
    hello_at: float | None = None  # the client's ClientHello passed
    finished_at: float | None = None  # the client's first record after it (its Finished)


@dataclasses.dataclass
class Tap:
    """A TCP forwarder in front of the edge: per connection, the bytes from the front, and
    the span of the TLS handshake (from the client's ClientHello to its Finished)."""

    upstream: int
    connections: list[Connection] = dataclasses.field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        conn = Connection()
        self.connections.append(conn)

        def on_record(record: bytes) -> bool:
            if conn.hello_at is None and record[0] == 0x16:
                conn.hello_at = loop.time()
            elif conn.hello_at is not None and record[0] == 0x17:
                conn.finished_at = loop.time()
            return conn.finished_at is not None

        def on_answer(data: bytes) -> None:
            conn.from_front += len(data)

        await forward_reading_tls(reader, writer, self.upstream, on_record, on_answer)

    def most_at_once(self, slack: float = JITTER) -> int:
        """The most handshakes under way at once (seen here a little after the client: a
        Finished and the next ClientHello may pass in either order, hence the slack)."""
        spans = [(c.hello_at, c.finished_at) for c in self.connections]
        done = [(s, e) for s, e in spans if s is not None and e is not None]
        return max((sum(1 for s, e in done if s <= at < e - slack) for at, _ in done), default=0)


@contextlib.asynccontextmanager
async def tap(upstream: int) -> AsyncIterator[Tap]:
    counter = Tap(upstream)
    async with serving(counter.handle) as counter.port:
        yield counter


def pad_answers(server: RelayServer, pads: list[int]) -> None:
    """The relay's 101 answers carry a field of pads[i % len(pads)] bytes (i: the carrier's
    number): the answer the client gets through the front grows and shrinks. (Not X-Pad:
    nginx drops that one from what it passes on.)"""
    handle, count = server.handle, 0

    async def padded(request):  # type: ignore[no-untyped-def]
        nonlocal count
        answer = await handle(request)
        if isinstance(answer, Upgrade):
            pad = pads[count % len(pads)]
            count += 1
            if pad:
                answer = Upgrade([*answer.headers, ("X-Filler", "p" * pad)], answer.run)
        return answer

    server.handle = padded  # type: ignore[method-assign]


async def _through_nginx(tmp_path: Path, test_ca, integrity_origin, pads: list[int]):  # type: ignore[no-untyped-def]
    padded = functools.partial(pad_answers, pads=pads)
    async with relay_behind_a_front(tmp_path, before_start=padded) as (_, keys, relay_port):
        with nginx_front(test_ca, relay_port) as edge:
            async with tap(edge.port) as counter:
                key = keys.add_client(
                    "bob", Endpoint("127.0.0.1", counter.port), "cdn.test", "relay.test"
                )
                dialer = parse_chain("front:" + key.encode() + ";carrier=capped").build(
                    DialOptions(tls=test_ca.client_context(), handshake_timeout=5)
                )
                try:
                    await _exchange(dialer, integrity_origin.port, 256 * 1024)
                    return counter, dialer.carrier, dialer.sessions[0].capped
                finally:
                    await dialer.aclose()


@pytest.mark.peer
@pytest.mark.parametrize(
    "pads",
    [
        pytest.param([0], id="steady"),
        pytest.param([0, 0, 0, 900, 0, 400, 1500, 0], id="grows-and-shrinks"),
        pytest.param([0] * 6 + [2600] * 40, id="grows-past-hold"),
    ],
)
async def test_early_hellos_through_nginx_never_take_a_carrier_past_its_budget(
    tmp_path, test_ca, integrity_origin, pads
) -> None:
    counter, mode, tunnel = await _through_nginx(tmp_path, test_ca, integrity_origin, pads)
    most = max(c.from_front for c in counter.connections)
    assert most <= DEFAULT_BUDGET, sorted(c.from_front for c in counter.connections)[-5:]
    assert mode.early_carriers > 0
    assert counter.most_at_once() <= HANDSHAKES  # the carriers' handshakes, at the front
    assert mode.resumed >= tunnel.carriers_opened - 2
    # An answer that grew past what the relay holds back until the confirm: no early
    # hellos through this front for a while; one that grew less: measured again.
    assert (mode._early_off_until > 0) == (max(pads) > HOLD)


async def test_a_new_client_with_a_relay_from_before_the_early_hello(
    frozen: Frozen,  # noqa: F811
    integrity_origin,
) -> None:
    frozen.relay.server.carrier_protocols = (CARRIER_PROTOCOL,)
    dialer = frozen.dialer()
    try:
        await _exchange(dialer, integrity_origin.port, 128 * 1024)
        mode = _front(dialer).carrier
        assert mode.relay_early is False and mode.early_carriers == 0
    finally:
        await dialer.aclose()


async def test_a_client_from_before_the_early_hello_with_a_new_relay(
    frozen: Frozen,  # noqa: F811
    integrity_origin,
) -> None:
    dialer = frozen.dialer()
    mode = _front(dialer).carrier
    mode.offer_early = False  # offers detour-carrier/1 only, as before
    try:
        await _exchange(dialer, integrity_origin.port, 128 * 1024)
        assert mode.relay_early is False and mode.early_carriers == 0
    finally:
        await dialer.aclose()


async def test_the_relay_changed_behind_the_front_mid_session(
    frozen: Frozen,  # noqa: F811
    integrity_origin,
) -> None:
    """Early hellos to a relay that then answers /1 only (replaced by an older one behind
    the same front): that carrier fails, the next ones ask again, nothing is lost."""
    dialer = frozen.dialer()
    mode = _front(dialer).carrier
    try:
        await _exchange(dialer, integrity_origin.port, 64 * 1024)
        assert mode.early_carriers > 0
        frozen.relay.server.carrier_protocols = (CARRIER_PROTOCOL,)
        await _exchange(dialer, integrity_origin.port, 128 * 1024)
        assert mode.relay_early is False
    finally:
        await dialer.aclose()


async def test_a_front_that_drops_what_comes_before_its_answer(
    frozen: Frozen,  # noqa: F811
    integrity_origin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Early hellos never reach the relay (here the relay drops every carrier whose hello
    was early, as a front that does not pass on early bytes would end it): those carriers
    fail, the tunnel does not, and the next carriers send their hello after the answer."""
    from helper.relay import carriers

    read_hello = carriers._read_hello

    async def dropping(ws, early_ok):  # type: ignore[no-untyped-def]
        hello = await read_hello(ws, early_ok)
        if hello[4]:  # early
            raise ProtocolError("no hello")
        return hello

    monkeypatch.setattr(carriers, "_read_hello", dropping)
    dialer = frozen.dialer()
    mode = _front(dialer).carrier
    try:
        await _exchange(dialer, integrity_origin.port, 128 * 1024)
        assert mode.early_carriers == 0 and mode._early_off_until > 0
        await _exchange(dialer, integrity_origin.port, 128 * 1024)
    finally:
        await dialer.aclose()
