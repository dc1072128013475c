"""A small HTTP/1.1 server on asyncio, for the status API (helper/api.py): one request per
connection, answers of a known length, no request bodies.

Why not a web framework: the status API serves four GET endpoints, and a router owner counts
megabytes (aiohttp alone costs ~14 MB resident). This server reuses what the proxy's
listener already has: the listener's transport glue (transports.tcp), its bounded head
reader (Stream.readuntil) and its request-head parser (helper/proxy/http.parse_head), which
the property tests in tests/fuzz cover.

Per connection: read the request head (at most MAX_HEAD bytes, within `head_timeout`, so a
client that sends a byte a minute cannot hold a connection), parse it, let the handler
answer, send the answer with `Connection: close`, half-close, and discard what the client
still sends for a moment (a body nobody reads), so that closing does not reset the
connection under an answer the client has not read yet (RFC 9112 §9.6). A head that does
not parse gets the HTTP error that says why; a handler that raises gets a 500 with one
sentence, and the traceback goes to the log only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from transports import Stream
from transports.tcp import SocketStream, StreamProtocol
from transports.wire import format_hostport

from .proxy.http import MAX_HEAD, REASONS, BadRequest, RequestHead, origin_target, parse_head

__all__ = ["HttpServer", "Request", "Response"]

log = logging.getLogger("detour.api")

HEAD_TIMEOUT = 10.0  # the whole request head must arrive within this
WRITE_TIMEOUT = 10.0  # the client must take the answer within this
LINGER_TIMEOUT = 2.0  # after the answer, how long to discard what the client still sends
LINGER_BYTES = 64 * 1024  # ... and how much of it
MAX_CONNECTIONS = 64  # connections served at once; more are reset at once

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Request(RequestHead):
    """What a handler sees of a request: the parsed head, and where it points."""

    path: str  # percent-decoded, without the query
    query: str
    host: str  # the host name or address the client used (Host, or an absolute target)
    peer: tuple[str, int] | None = None  # the client's address
    local: tuple[str, int] | None = None  # the address the request came in on


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, text.encode(), headers=headers)

    def encode(self, *, head_only: bool = False, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
        """The response on the wire. A HEAD answer has the GET answer's headers (its
        Content-Length too) and no body (RFC 9110 §9.3.2)."""
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}",
            f"Date: {http_date(time.time())}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in (*self.headers, *extra)),
            "Connection: close",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


Handler = Callable[[Request], Awaitable[Response]]


def http_date(when: float) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate, whatever the locale."""
    t = time.gmtime(when)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def request_from_head(
    head: RequestHead, peer: tuple[str, int] | None = None, local: tuple[str, int] | None = None
) -> Request:
    """The request a handler sees, from a parsed head; raises BadRequest for what a server
    must refuse: a target that is not a path or an http URL, and, RFC 9112 §3.2, an HTTP/1.1
    request without a Host header or any request with more than one."""
    path, query, authority = origin_target(head)
    hosts = head.header_count("host")
    if hosts > 1:
        raise BadRequest("more than one Host header")
    if hosts == 0 and head.version == "HTTP/1.1" and authority is None:
        raise BadRequest("an HTTP/1.1 request needs a Host header")
    host = host_name(authority if authority is not None else head.header("host") or "")
    return Request(
        head.method, head.target, head.version, head.headers, path, query, host, peer, local
    )


def host_name(authority: str) -> str:
    """The host of `host[:port]` or `[v6]:port`, without brackets ('' if malformed)."""
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[1:end] if end > 0 else ""
    return authority.split(":", 1)[0]


class _Protocol(StreamProtocol):
    def __init__(self, server: HttpServer) -> None:
        super().__init__()
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.server._accepted(SocketStream(self.transport, self))


class HttpServer:
    """Serves `handler` on host:port; `headers` go on every answer, errors included."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        name: str = "HTTP server",
        headers: tuple[tuple[str, str], ...] = (),
        head_timeout: float = HEAD_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.name = name
        self.headers = headers
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (the port actually bound)."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Listen; an address in use raises OSError naming the server and the address."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Protocol(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            where = format_hostport(self.host, self.port)
            raise OSError(exc.errno, f"{self.name} on {where}: {reason}") from None

    async def stop(self) -> None:
        """Stop listening and end the connections being served."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def _accepted(self, stream: SocketStream) -> None:
        if len(self._tasks) >= self.max_connections:
            stream.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(stream), name="detour-api")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: SocketStream) -> None:
        try:
            answer = await self.answer(stream)
            if answer is None:
                return  # the client left: close (below)
            async with asyncio.timeout(WRITE_TIMEOUT):
                stream.write(answer)
                await stream.drain()
            await _linger(stream)
        except (OSError, TimeoutError):
            stream.abort()  # the client went away, or stopped reading
        finally:
            stream.close()

    async def answer(self, stream: Stream) -> bytes | None:
        """Read one request off `stream` and return the whole answer to send, or None to
        just close (the client left mid-head). Any Stream will do (the tests script one)."""
        try:
            async with asyncio.timeout(self.head_timeout):
                raw = await stream.readuntil(b"\r\n\r\n", MAX_HEAD)
        except TimeoutError:
            return self._error(408, "the request head did not arrive in time")
        except asyncio.LimitOverrunError:
            return self._error(431, "request head too large")
        except asyncio.IncompleteReadError:
            return None
        try:
            head = parse_head(raw)
            request = request_from_head(
                head, stream.get_extra_info("peername"), stream.get_extra_info("sockname")
            )
        except BadRequest as exc:
            return self._error(exc.status, str(exc))
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("%s: %s %s failed", self.name, request.method, request.path)
            response = Response.text(500, "internal error; see detour's log\n")
        return response.encode(head_only=request.method == "HEAD", extra=self.headers)

    def _error(self, status: int, message: str) -> bytes:
        return Response.text(status, message + "\n").encode(extra=self.headers)


async def _linger(stream: SocketStream) -> None:
    """Half-close, then read and drop what the client still sends until it closes too (a
    short while at most): closing with unread bytes would reset the connection, and a reset
    can make the client lose the answer it has not read yet."""
    if stream.can_write_eof():
        stream.write_eof()
    dropped = 0
    try:
        async with asyncio.timeout(LINGER_TIMEOUT):
            while dropped < LINGER_BYTES:
                chunk = await stream.read(LINGER_BYTES)
                if not chunk:
                    return
                dropped += len(chunk)
    except TimeoutError:
        pass
