"""`direct` (transports/direct.py): family interleaving and Happy Eyeballs against real
loopback listeners, with a fake resolver so no test depends on DNS."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest

from transports.base import DialError, Endpoint, Failure, IPAddress, Op
from transports.direct import DirectDialer, interleave_families

SAFETY = 5.0


def ips(*texts: str) -> list[IPAddress]:
    return [ipaddress.ip_address(t) for t in texts]


# --- interleave_families ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param([], [], id="empty"),
        pytest.param(["192.0.2.1"], ["192.0.2.1"], id="one"),
        pytest.param(
            ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"],
            ["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"],
            id="v4-first",
        ),
        pytest.param(
            ["2001:db8::1", "192.0.2.1", "192.0.2.2", "192.0.2.3"],
            ["2001:db8::1", "192.0.2.1", "192.0.2.2", "192.0.2.3"],
            id="v6-first-more-v4",
        ),
        pytest.param(
            ["2001:db8::1", "2001:db8::2", "2001:db8::3", "192.0.2.1"],
            ["2001:db8::1", "192.0.2.1", "2001:db8::2", "2001:db8::3"],
            id="v6-first-one-v4-last",
        ),
        pytest.param(
            ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
            ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
            id="one-family-unchanged",
        ),
    ],
)
def test_interleave_families(given: list[str], expected: list[str]) -> None:
    """RFC 8305 §4: alternate families, starting with the family of the first address, and
    keep the resolver's order within each family."""
    assert interleave_families(ips(*given)) == ips(*expected)


# --- DirectDialer -------------------------------------------------------------------------


class FakeResolver:
    def __init__(
        self, answers: dict[str, list[str]] | None = None, error: DialError | None = None
    ) -> None:
        self.answers = {name: ips(*addrs) for name, addrs in (answers or {}).items()}
        self.error = error
        self.asked: list[str] = []

    async def resolve(self, host: str) -> list[IPAddress]:
        self.asked.append(host)
        if self.error is not None:
            raise self.error
        return list(self.answers[host])


class Listener:
    """A loopback TCP listener that records which local address each connection reached."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.accepted: list[tuple[str, int]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, host: str = "127.0.0.1") -> int:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.append(writer.get_extra_info("sockname")[:2])
            self.writers.append(writer)
            writer.write(b"hello")

        self.server = await asyncio.start_server(on_connect, host, 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lis = Listener()
    yield lis
    await lis.close()


async def dial(dialer: DirectDialer, target: Endpoint):
    async with asyncio.timeout(SAFETY):
        return await dialer.dial(target)


async def close(stream) -> None:
    stream.close()
    await stream.wait_closed()


async def test_ipv4_literal_is_not_resolved(listener: Listener) -> None:
    port = await listener.start()
    resolver = FakeResolver()
    stream = await dial(DirectDialer(resolver), Endpoint("127.0.0.1", port))
    try:
        assert resolver.asked == []
        assert stream.get_extra_info("peername")[:2] == ("127.0.0.1", port)
        assert await stream.readexactly(5) == b"hello"
    finally:
        await close(stream)


async def test_name_fails_over_from_closed_to_open_address(listener: Listener) -> None:
    """127.0.0.2 refuses (the listener is bound to 127.0.0.1 only); the next address must be
    tried at once, not after the stagger: with a 30 s stagger the dial only finishes inside
    the 5 s safety bound if the refusal started it."""
    port = await listener.start("127.0.0.1")
    resolver = FakeResolver({"svc.test": ["127.0.0.2", "127.0.0.1"]})
    stream = await dial(DirectDialer(resolver, attempt_delay=30), Endpoint("svc.test", port))
    try:
        assert resolver.asked == ["svc.test"]
        assert stream.get_extra_info("peername")[:2] == ("127.0.0.1", port)
        assert listener.accepted == [("127.0.0.1", port)]
    finally:
        await close(stream)


async def test_all_refused_is_connection_refused_during_connect(listener: Listener) -> None:
    port = await listener.start("127.0.0.1")
    resolver = FakeResolver({"svc.test": ["127.0.0.2", "127.0.0.3"]})
    with pytest.raises(DialError) as err:
        await dial(DirectDialer(resolver, attempt_delay=30), Endpoint("svc.test", port))
    assert err.value.failure is Failure.CONNECTION_REFUSED
    assert err.value.op is Op.CONNECT
    assert f"127.0.0.2:{port}" in err.value.detail or f"127.0.0.3:{port}" in err.value.detail
    assert listener.accepted == []


async def test_literal_refused(listener: Listener) -> None:
    port = await listener.start("127.0.0.1")
    with pytest.raises(DialError) as err:
        await dial(DirectDialer(FakeResolver()), Endpoint("127.0.0.2", port))
    assert (err.value.failure, err.value.op) == (Failure.CONNECTION_REFUSED, Op.CONNECT)


async def test_resolver_error_propagates_with_op_resolve() -> None:
    nxdomain = DialError(Failure.DNS_NXDOMAIN, Op.RESOLVE, "blocked.test: no such name")
    with pytest.raises(DialError) as err:
        await dial(DirectDialer(FakeResolver(error=nxdomain)), Endpoint("blocked.test", 443))
    assert err.value.failure is Failure.DNS_NXDOMAIN
    assert err.value.op is Op.RESOLVE
    assert err.value.detail == "blocked.test: no such name"


async def test_resolver_with_no_addresses_is_a_dial_error() -> None:
    """The Dialer contract: a stream or a DialError. A resolver (a `resolve:` layer, a
    plug-in) that answers with an empty list must not make dial() raise ValueError("nothing
    to race") from the racing helper."""
    resolver = FakeResolver({"empty.test": []})
    with pytest.raises(DialError) as err:
        await dial(DirectDialer(resolver), Endpoint("empty.test", 443))
    assert err.value.op is Op.RESOLVE


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"attempt_delay": -0.1}, id="negative-delay"),
        pytest.param({"connect_timeout": 0}, id="zero-timeout"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DirectDialer(FakeResolver(), **kwargs)
