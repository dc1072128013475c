"""Retrying a TLS client's first flight through the next route.

Blocking by server name strikes right after the ClientHello: a reset, a close, or silence.
At that moment the client has received nothing from the destination, so detour can take the
ClientHello it holds, send it through the next route, and hand the client whichever answer
comes -- the client never learns the first route failed (ByeDPI's "auto" mode does the same
for its strategies). Only a TLS ClientHello is replayed: it is safe to send twice; an
arbitrary first request (an HTTP POST) would not be.

Each such failure also counts against the route's health, so repeated ones reorder routes
for the connections after it and ask for a re-probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from transports import DialError, Endpoint, Failure, Op, Stream
from transports.base import classify_os_error
from transports.deadlines import Deadlines

from ..routing import AllRoutesFailed, Connection, Denied, Router
from .relay import Progress, RelayStats

__all__ = ["first_exchange"]

log = logging.getLogger("detour.proxy")

# How long to wait for a client's first bytes after the proxy handshake. Clients of TLS send
# their ClientHello at once; one that waits is left to the relay unretried.
FIRST_FLIGHT_WAIT = 0.5
TLS_HANDSHAKE_RECORD = b"\x16\x03"


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
    if not first.startswith(TLS_HANDSHAKE_RECORD):
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
                answer = await upstream.read(65536)
            if not answer:
                error = DialError(Failure.EOF, Op.TLS_HANDSHAKE, "closed after the ClientHello")
        except TimeoutError:
            error = DialError(
                Failure.TIMEOUT,
                Op.TLS_HANDSHAKE,
                f"no answer to the ClientHello within {answer_timeout:g}s",
            )
        except OSError as exc:
            error = classify_os_error(exc, Op.TLS_HANDSHAKE)
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
            log.info("%s: every route failed the ClientHello (last: %s)", target, error)
            return None
        log.info("%s via %s: %s; trying %s", target, tried[-1], error, connection.route.name)
