"""A TLS client's first flight retried through the next route (helper/proxy/retry.py), on
in-memory streams: the route that swallows the ClientHello is counted as failing and the
next one answers it, made by the caller's own `connect` (the client server wraps each new
route stream with its listener's hook there); anything but a ClientHello is handed back
untouched; when no route answers, the client learns it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence

from helper.proxy.relay import RelayStats
from helper.proxy.retry import FirstFlight, first_exchange
from helper.routing import AllRoutesFailed, Connection, Route
from tests.support.memory import memory_pipe
from transports import DialError, Endpoint, Stream, parse_chain
from transports.deadlines import Deadline, Deadlines
from transports.wrapped import WrappedStream

TARGET = Endpoint("web.telegram.org", 443)
HELLO = b"\x16\x03\x01\x00\x05hello"
ANSWER = b"\x16\x03\x03\x00\x06answer"


class Book:
    """What the retry tells the router."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.succeeded: list[str] = []

    def record_failure(self, service, route: Route, error: DialError) -> None:
        self.failed.append((route.name, error.failure.value))

    def record_success(self, service, route: Route) -> None:
        self.succeeded.append(route.name)

    async def connect(self, target: Endpoint, *, exclude: Sequence[str] = ()) -> Connection:
        raise AssertionError("the caller's connect is used, not the router's")


def connection(name: str):
    """A route's connection: (the end detour holds, the destination's end)."""
    ours, theirs = memory_pipe(record=True, names=(f"{name}-detour", f"{name}-destination"))
    return Connection(ours, Route(name, parse_chain("direct"), None), None), theirs


async def test_the_next_route_answers_a_swallowed_client_hello() -> None:
    client, held = memory_pipe(names=("app", "detour"))
    first, first_far = connection("first")
    second, second_far = connection("second")
    tried: list[list[str]] = []

    async def connect(names: Sequence[str]) -> Connection:
        tried.append(list(names))
        second_far.write(ANSWER)  # this one answers
        return second

    client.write(HELLO)
    stats = RelayStats()
    book = Book()
    chosen = await first_exchange(
        held, first, book, TARGET, 0.2, stats, deadlines=Deadlines(tick=0.02), connect=connect
    )
    assert chosen is second
    assert tried == [["first"]]
    assert book.failed == [("first", "generic_timeout_error")] and book.succeeded == ["second"]
    # Each route got the ClientHello; the first was then cut (reset), the second kept.
    assert first.stream.writes == [HELLO] and first_far.reset
    assert await second_far.read() == HELLO
    assert await client.read() == ANSWER
    assert (stats.up, stats.down) == (len(HELLO), len(ANSWER))


async def test_what_is_not_a_client_hello_is_handed_back_untouched() -> None:
    client, held = memory_pipe()
    first, _ = connection("first")
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    chosen = await first_exchange(held, first, Book(), TARGET, 0.2, RelayStats())
    assert chosen is first
    assert await held.read() == b"GET / HTTP/1.1\r\n\r\n"  # put back for the relay


async def test_when_no_route_answers_the_caller_is_told() -> None:
    client, held = memory_pipe()
    first, _ = connection("first")

    async def connect(names: Sequence[str]) -> Connection:
        raise AllRoutesFailed(TARGET, None, [])

    client.write(HELLO)
    book = Book()
    chosen = await first_exchange(
        held,
        first,
        book,
        TARGET,
        0.1,
        RelayStats(),
        deadlines=Deadlines(tick=0.02),
        connect=connect,
    )
    assert chosen is None
    assert book.failed == [("first", "generic_timeout_error")]


async def test_another_first_flight_goes_through_the_next_route_when_one_closes() -> None:
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    client, held = memory_pipe(names=("app", "detour"))
    first, first_far = connection("first")
    second, second_far = connection("second")

    async def connect(names: Sequence[str]) -> Connection:
        second_far.write(b"resPQ")
        return second

    client.write(b"init+req_pq")
    first_far.write_eof()  # the first route ends before answering
    book = Book()
    chosen = await first_exchange(
        held, first, book, TARGET, 5, RelayStats(), connect=connect, flight=flight
    )
    assert chosen is second
    assert book.failed == [("first", "eof_error")] and book.succeeded == ["second"]
    assert await second_far.read() == b"init+req_pq"
    assert await client.read() == b"resPQ"


async def test_a_silent_route_is_kept_when_silence_is_no_failure() -> None:
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    client, held = memory_pipe()
    first, first_far = connection("first")
    client.write(b"init+msg")
    book = Book()
    stats = RelayStats()
    chosen = await first_exchange(
        held, first, book, TARGET, 0.1, stats, deadlines=Deadlines(tick=0.02), flight=flight
    )
    assert chosen is first and book.failed == []
    assert await first_far.read() == b"init+msg" and stats.up == len(b"init+msg")


async def test_a_client_that_sends_more_is_not_kept_waiting_for_an_answer() -> None:
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    client, held = memory_pipe()
    first, first_far = connection("first")
    client.write(b"init+upload-part-1")
    book = Book()

    async def later() -> None:
        await first_far.read()  # the first flight is out: the client goes on
        client.write(b"upload-part-2")

    helper = asyncio.ensure_future(later())
    chosen = await first_exchange(held, first, book, TARGET, 30, RelayStats(), flight=flight)
    await helper
    assert chosen is first and book.failed == []
    assert await held.read() == b"upload-part-2"  # put back for the relay


class ManualDeadlines(Deadlines):
    """Deadlines that pass only when the test says so (`expire`), at an exact point."""

    def after(self, seconds: float) -> Deadline:
        return Deadline(self, float("inf"))

    def expire(self) -> None:
        for deadline in self._pending:
            deadline.when = float("-inf")
        self._check()


class CancelHook(WrappedStream):
    """A stream that calls `on_cancel` when a read of it is cancelled (the deadline can then
    pass exactly while that read is reaped)."""

    def __init__(self, inner: Stream, on_cancel: Callable[[], None]) -> None:
        super().__init__(inner)
        self.on_cancel = on_cancel

    async def read(self, n: int = 65536) -> bytes:
        try:
            return await self.inner.read(n)
        except asyncio.CancelledError:
            self.on_cancel()
            raise


async def _waiting_for_an_answer(
    flight: FirstFlight, deadlines: ManualDeadlines, hook: str | None = None
):
    """A first exchange whose first flight is out and whose route is silent: it waits for
    the route's answer and for more from the client, both at once. `hook`: "client" or
    "route", whose read, once cancelled, lets the deadline pass."""
    client, held = memory_pipe()
    first, first_far = connection("first")
    if hook == "client":
        held = CancelHook(held, deadlines.expire)
    elif hook == "route":
        first = dataclasses.replace(first, stream=CancelHook(first.stream, deadlines.expire))
    client.write(b"init+upload-part-1")
    exchange = asyncio.ensure_future(
        first_exchange(
            held, first, Book(), TARGET, 30, RelayStats(), deadlines=deadlines, flight=flight
        )
    )
    assert await first_far.read() == b"init+upload-part-1"
    for _ in range(5):
        await asyncio.sleep(0)  # both reads are under way
    assert not exchange.done()
    return client, held, first, first_far, exchange


async def test_what_the_client_sends_as_the_answer_wait_ends_is_kept() -> None:
    # The deadline passes in the same turn of the event loop as the client's next bytes
    # arrive: the read that took them has finished, the wait for it is cut short. Those bytes
    # are the relay's to send (they were lost: an upload that ended there lost its tail).
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    deadlines = ManualDeadlines()
    client, held, first, _, exchange = await _waiting_for_an_answer(flight, deadlines)
    client.write(b"upload-part-2")
    client.write_eof()
    deadlines.expire()
    assert await exchange is first
    assert await held.read() == b"upload-part-2"
    assert await held.read() == b""


async def test_an_answer_arriving_as_the_wait_ends_is_kept() -> None:
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    deadlines = ManualDeadlines()
    client, _, first, first_far, exchange = await _waiting_for_an_answer(flight, deadlines)
    first_far.write(b"resPQ")
    deadlines.expire()
    assert await exchange is first
    async with asyncio.timeout(5):  # (it was lost: the relay would wait for it for ever)
        assert await first.stream.read() == b"resPQ"  # left for the relay to pass on


async def test_what_the_client_sends_is_kept_when_the_deadline_passes_as_the_answer_is_reaped() -> (
    None
):
    # The wait for more has ended normally; the deadline passes while the answer's read is
    # being cancelled.
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    deadlines = ManualDeadlines()
    client, held, first, _, exchange = await _waiting_for_an_answer(flight, deadlines, "route")
    client.write(b"upload-part-2")
    client.write_eof()
    assert await exchange is first
    assert await held.read() == b"upload-part-2"
    assert await held.read() == b""


async def test_an_answer_is_kept_when_the_deadline_passes_as_the_clients_read_is_reaped() -> None:
    flight = FirstFlight("the first packet", any_bytes=True, silence_fails=False)
    deadlines = ManualDeadlines()
    client, _, first, first_far, exchange = await _waiting_for_an_answer(
        flight, deadlines, "client"
    )
    first_far.write(b"resPQ")
    assert await exchange is first
    async with asyncio.timeout(5):
        assert await first.stream.read() == b"resPQ"  # left for the relay to pass on
