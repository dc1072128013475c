"""Retrying a TLS client's first flight through the next route.

Blocking by server name strikes right after the ClientHello: a reset, a close, or silence.
At that moment the client has received nothing from the destination, so detour can take the
ClientHello it holds, send it through the next route, and hand the client whichever answer
comes -- the client never learns the first route failed (ByeDPI's "auto" mode does the same
for its strategies). Only a TLS ClientHello is replayed: it is safe to send twice; an
arbitrary first request (an HTTP POST) would not be.

A listener may declare another first flight safe to resend (FirstFlight): the MTProto proxy
endpoint's, whose client's first packet detour re-encrypts the same way for every route.

Each such failure also counts against the route's health, so repeated ones reorder routes
for the connections after it and ask for a re-probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from transports import DialError, Endpoint, Failure, Op, Stream
from transports.base import classify_os_error
from transports.deadlines import Deadlines

from ..routing import AllRoutesFailed, Connection, Denied, Router
from .relay import Progress, RelayStats

__all__ = ["CLIENT_HELLO", "FirstFlight", "first_exchange"]

log = logging.getLogger("detour.proxy")

# How long to wait for a client's first bytes after the proxy handshake. Clients of TLS send
# their ClientHello at once; one that waits is left to the relay unretried.
FIRST_FLIGHT_WAIT = 0.5
TLS_HANDSHAKE_RECORD = b"\x16\x03"


@dataclass(frozen=True)
class FirstFlight:
    """Which first flight of a client may be resent through the next route, and what
    counts as that route failing it."""

    name: str = "the ClientHello"  # in log lines
    any_bytes: bool = False  # whatever the client sends first, not only a TLS ClientHello
    # No answer within the timeout is a failure (a TLS server always answers a hello); else
    # the connection is kept and relayed as it is (a protocol whose server may stay silent).
    silence_fails: bool = True
    op: Op = Op.TLS_HANDSHAKE  # what a route's failure is recorded as


CLIENT_HELLO = FirstFlight()


async def first_exchange(
    client: Stream,
    connection: Connection,
    router: Router,
    target: Endpoint,
    answer_timeout: float,
    stats: RelayStats,
    *,
    deadlines: Deadlines | None = None,
    connect: Callable[[Sequence[str]], Awaitable[Connection]] | None = None,
    flight: FirstFlight = CLIENT_HELLO,
    progress: Progress | None = None,
) -> Connection | None:
    """Carry the client's ClientHello until some route answers it. Returns the connection
    that answered (its answer already passed to the client), or None when every route failed.
    A client that does not start with a ClientHello is handed back untouched. `connect`
    makes the connection through the next route, given the routes tried (default:
    router.connect, excluding them). `deadlines` bounds the wait for the client's first bytes
    (default: a timer of its own). `progress` is told of the ClientHello and the answer that
    reach the client."""
    if answer_timeout <= 0:
        return connection
    deadlines = deadlines or Deadlines()
    try:
        with deadlines.after(FIRST_FLIGHT_WAIT):
            first = await client.read(65536)
    except (TimeoutError, OSError):
        return connection
    if not first:
        return connection
    if not (flight.any_bytes or first.startswith(TLS_HANDSHAKE_RECORD)):
        client.unread(first)
        return connection
    tried: list[str] = []
    while True:
        upstream = connection.stream
        error: DialError | None = None
        answer = b""
        try:
            upstream.write(first)
            with deadlines.after(answer_timeout):
                if flight.silence_fails:
                    answer = await upstream.read(65536)
                elif (got := await _answer_unless_more(client, upstream)) is None:
                    stats.up += len(first)  # the client goes on without an answer: relay
                    _sent(progress, first)
                    return connection
                else:
                    answer = got
            if not answer:
                error = DialError(Failure.EOF, flight.op, f"closed after {flight.name}")
        except TimeoutError:
            if not flight.silence_fails:
                stats.up += len(first)
                _sent(progress, first)
                return connection
            error = DialError(
                Failure.TIMEOUT,
                flight.op,
                f"no answer to {flight.name} within {answer_timeout:g}s",
            )
        except OSError as exc:
            error = classify_os_error(exc, flight.op)
        if error is None:
            stats.up += len(first)
            stats.down += len(answer)
            if progress is not None:
                now = asyncio.get_running_loop().time()
                progress.sent(len(first), now)
                progress.received(answer, now)
            client.write(answer)
            router.record_success(connection.service, connection.route)
            return connection
        upstream.abort()
        router.record_failure(connection.service, connection.route, error)
        tried.append(connection.route.name)
        try:
            if connect is None:
                connection = await router.connect(target, exclude=tried)
            else:
                connection = await connect(tried)
        except (Denied, AllRoutesFailed):
            log.info("%s: every route failed %s (last: %s)", target, flight.name, error)
            return None
        log.info("%s via %s: %s; trying %s", target, tried[-1], error, connection.route.name)


async def _answer_unless_more(client: Stream, upstream: Stream) -> bytes | None:
    """The upstream's first answer, or None when the client sends more first (it is not
    waiting for an answer; what it sent is put back for the relay). A client that ends its
    side is still waiting.

    This wait may be cut short (the answer's deadline) in the same turn of the event loop
    as a read finishes, before or while the other read is reaped: what a finished read took
    is then put back into its stream, for the relay. (The client's bytes are re-encrypted
    as they are read: dropped, the stream would go on without them, and when they were the
    last, end cleanly with its tail missing.) A read cut short at its await takes nothing."""
    answer = asyncio.ensure_future(upstream.read(65536))
    more = asyncio.ensure_future(client.read(65536))
    cut_short = True
    try:
        await asyncio.wait({answer, more}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done() and more.exception() is None and not more.result():
            # The client has ended its side: the answer is all to come. (asyncio.wait:
            # awaiting the task itself would cancel it with this one, taken bytes and all.)
            await asyncio.wait({answer})
        cut_short = False
    finally:
        for task in (answer, more):
            task.cancel()  # one that has not finished now takes nothing
        if data := _taken(more):
            client.unread(data)
        interrupted = await _reap(answer, more)
        if (cut_short or interrupted is not None) and (data := _taken(answer)):
            upstream.unread(data)
        if interrupted is not None:
            raise interrupted
    if answer.cancelled():
        return None
    return answer.result()  # the answer, or what the upstream raised


def _taken(read: asyncio.Future[bytes]) -> bytes:
    """What a finished read returned; b"" if it was cancelled, failed or hit the end."""
    if not read.done() or read.cancelled() or read.exception() is not None:
        return b""
    return read.result()


async def _reap(*tasks: asyncio.Future[bytes]) -> asyncio.CancelledError | None:
    """Wait until the cancelled `tasks` have finished (a stream allows one read at a time:
    the relay's must come after), also when this task is cancelled meanwhile: that
    cancellation is returned, for the caller to raise once it has put back what they took."""
    interrupted: asyncio.CancelledError | None = None
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(set(tasks))
        except asyncio.CancelledError as exc:
            interrupted = exc
    return interrupted


def _sent(progress: Progress | None, first: bytes) -> None:
    """Tell the freeze watch of a first flight relayed without an answer yet."""
    if progress is not None:
        progress.sent(len(first), asyncio.get_running_loop().time())
