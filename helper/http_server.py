"""A small HTTP/1.1 server on asyncio, for the status API (helper/api.py) and the relay's
website and WebSocket upgrades (helper/relay/server.py): answers of a known length, request
bodies skipped, never read.

Why not a web framework: the status API serves four GET endpoints, and a router owner counts
megabytes (aiohttp alone costs ~14 MB resident); the relay must answer every request, the
malformed ones too, exactly as the web server its website claims to be, which a framework
only allows through its private internals. This server reuses what the proxy's listener
already has: the transport glue (transports.tcp) and the request-head parser
(transports/wire.py), which the property tests in tests/fuzz cover.

Per connection: read a request head (at most MAX_HEAD bytes, within `head_timeout`, so a
client that sends a byte a minute cannot hold a connection), parse it, let the handler
answer, send the answer. What is plainly not an HTTP request (a line of junk, an SSH
greeting) is answered as soon as its first line has arrived. Then, by the server's Manner:

- one request per connection (the status API): the answer says `Connection: close`, the
  server half-closes and discards what the client still sends for a moment (a body nobody
  reads), so that closing does not reset the connection under an answer the client has not
  read yet (RFC 9112 §9.6);
- keep-alive (the relay's website, as nginx): the request's body is skipped (its length or
  its chunks, RFC 9112 §6.3) and the next request read, until the client says close or is
  idle for `keep_alive` seconds.

A head that does not parse gets the HTTP error that says why (by the Manner: detour's plain
sentence, or nginx's page); a handler that raises gets a 500 with one sentence, and the
traceback goes to the log only. A handler may answer with an Upgrade (a WebSocket): the 101
goes out and the connection is the Upgrade's from then on.

Why this module is long: reading a request, answering it and what comes after on the
connection (keep-alive, bodies skipped, lingering, HTTP/0.9, upgrades) are one loop per
connection, kept in one file so the order of its decisions reads in one place; the parsers
it uses are transports/wire.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from transports import Stream
from transports.tcp import SocketStream, StreamProtocol
from transports.wire import (
    MAX_HEAD,
    REASONS,
    ChunkedBody,
    HeadError,
    ProtocolError,
    RequestHead,
    body_length,
    check_method,
    check_request_line,
    format_hostport,
    parse_request_head,
    request_line_parts,
)

from .proxy.http import BadRequest, origin_target

__all__ = ["HttpServer", "Manner", "Request", "Response", "Upgrade"]

log = logging.getLogger("detour.api")

HEAD_TIMEOUT = 10.0  # the whole request head must arrive within this
WRITE_TIMEOUT = 10.0  # the client must take the answer within this
LINGER_TIMEOUT = 2.0  # after the answer, how long to discard what the client still sends
LINGER_BYTES = 64 * 1024  # ... and how much of it
MAX_CONNECTIONS = 64  # connections served at once; more are reset at once
MAX_SKIP = 1024 * 1024  # a request body larger than this ends the connection after the answer

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
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
    content_type: str | None = "text/plain; charset=utf-8"  # None: no Content-Type
    headers: tuple[tuple[str, str], ...] = ()  # after Content-Length
    reason: str = ""  # the status line's phrase; REASONS' when empty
    close: bool = False  # end the connection after it, even where it could be kept
    after: tuple[tuple[str, str], ...] = ()  # after Connection (nginx puts ETag there)
    length: bool = True  # a Content-Length field (a 304 has none)
    hang_up: bool = False  # end the connection after it whatever its Connection field says

    @classmethod
    def text(cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, text.encode(), headers=headers)

    def encode(
        self,
        *,
        head_only: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
        server: str | None = None,
        keep_alive: bool = False,
    ) -> bytes:
        """The response on the wire. A HEAD answer has the GET answer's headers (its
        Content-Length too) and no body (RFC 9110 §9.3.2). `server`: a Server field first,
        where nginx puts it."""
        lines = [
            f"HTTP/1.1 {self.status} {self.reason or REASONS.get(self.status, 'Error')}",
            *([f"Server: {server}"] if server else []),
            f"Date: {http_date(time.time())}",
            *([f"Content-Type: {self.content_type}"] if self.content_type is not None else []),
            *([f"Content-Length: {len(self.body)}"] if self.length else []),
            *(f"{name}: {value}" for name, value in (*self.headers, *extra)),
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in self.after),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


@dataclass(frozen=True)
class Upgrade:
    """An answer that switches protocols (RFC 9110 §15.2.2): the 101's header fields, then
    `run` has the connection (it is closed when `run` returns)."""

    headers: list[tuple[str, str]]
    run: Callable[[Stream], Awaitable[None]]

    def encode(self, *, server: str | None = None) -> bytes:
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            *([f"Server: {server}"] if server else []),
            f"Date: {http_date(time.time())}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[Request], Awaitable[Response | Upgrade]]


def text_error(status: int, message: str) -> Response:
    """detour's own error answer: the status and one sentence saying what was wrong."""
    return Response.text(status, message + "\n")


@dataclass(frozen=True)
class Manner:
    """How a server behaves where HTTP servers differ. The default is the status API's;
    the relay's website has nginx's (helper/relay/decoy.py)."""

    keep_alive: float = 0.0  # seconds a connection may wait for its next request; 0: one
    server: str | None = None  # the Server field, if any
    line_limit: int | None = None  # a longer request line: 414, at once
    field_limit: int | None = None  # a longer header field line: 400
    lenient: bool = False  # request lines as web servers read them (transports/wire.py)
    error: Callable[[int, str], Response] = text_error  # the answer to a bad request
    answer_timeout: bool = True  # a head that does not come in time: 408, or just close
    http09: bool = False  # a request line of two parts is HTTP/0.9: the bare body, then close
    # nginx's lingering_timeout: a request body that has not all come is waited for (and
    # dropped) until the client is quiet this long, before the connection closes or the
    # next request is read; None: the status API's short linger after a last answer
    lingering: float | None = None


def http_date(when: float) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate, whatever the locale."""
    t = time.gmtime(when)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def request_from_head(
    head: RequestHead,
    peer: tuple[str, int] | None = None,
    local: tuple[str, int] | None = None,
    *,
    lenient: bool = False,
) -> Request:
    """The request a handler sees, from a parsed head; raises BadRequest for what a server
    must refuse: a target that is not a path or an http URL (`lenient`: a URL of any
    scheme and bytes past ASCII, as web servers take them), and, RFC 9112 §3.2, an HTTP/1.1
    request without a Host header or any request with more than one."""
    target = head.target
    scheme = _SCHEME.match(target) if lenient else None
    if scheme is not None:
        target = "http" + target[scheme.end() - 3 :]
    if lenient:  # bytes past ASCII (a UTF-8 path, say), as web servers take them
        target = "".join(c if ord(c) < 0x80 else f"%{ord(c):02X}" for c in target)
    path, query, authority = origin_target(dataclasses.replace(head, target=target))
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


async def read_request_head(
    stream: Stream,
    limit: int = MAX_HEAD,
    line_limit: int | None = None,
    lenient: bool = False,
    http09: bool = False,
) -> bytes:
    """Read a request head off `stream`: up to and including the empty line that ends it
    (CRLF CRLF, or bare LFs, which then fail to parse as servers refuse them); bytes after
    it stay readable. `lenient` (as web servers read): empty lines before the request line
    are skipped (RFC 9112 §2.2), and the request line is read as check_request_line's.

    What cannot start a request is refused as soon as it shows, not when a head that may
    never come has arrived: a method with characters no method has, a request line longer
    than `line_limit` (414), a complete request line of one part or more than three. (Two
    parts may be HTTP/0.9: with `http09` that line is the whole head, else the server waits
    it out.) Raises HeadError,
    asyncio.LimitOverrunError past `limit` bytes, and IncompleteReadError at EOF."""
    buf = bytearray()
    line_checked = False
    searched = 0  # where to look for the head's end from
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), None)
        buf += chunk
        if not line_checked:
            start = len(buf) - len(buf.lstrip(b"\r\n")) if lenient else 0
            if start:
                del buf[:start]
            newline = buf.find(b"\n")
            line = bytes(buf if newline < 0 else buf[:newline]).decode("latin-1").rstrip("\r")
            if line:  # the method, as far as it has come (within the limit: as nginx reads)
                check_method(line[:line_limit].partition(" ")[0])
            if line_limit is not None and len(line) > line_limit:
                raise HeadError("request line too long", 414)
            if newline >= 0:
                line_checked = True
                parts = request_line_parts(line, lenient=lenient)
                if len(parts) == 2 and http09:
                    if newline + 1 < len(buf):
                        stream.unread(bytes(buf[newline + 1 :]))
                    return bytes(buf[: newline + 1])
                if len(parts) not in (2, 3):  # (two: HTTP/0.9, waited out)
                    check_request_line(line, lenient=lenient)  # raises: malformed
        end = _head_end(buf, max(0, searched - 2))
        if end >= 0:
            if end < len(buf):
                stream.unread(bytes(buf[end:]))
            return bytes(buf[:end])
        searched = len(buf)
        if len(buf) > limit:
            raise asyncio.LimitOverrunError("request head too large", len(buf))


def _head_end(buf: bytearray, start: int) -> int:
    """The end of the empty line that ends a head in `buf`, or -1."""
    ends = [i for i in (buf.find(b"\n\r\n", start), buf.find(b"\n\n", start)) if i >= 0]
    if not ends:
        return -1
    at = min(ends)
    return at + (3 if buf[at + 1 : at + 2] == b"\r" else 2)


class _Protocol(StreamProtocol):
    def __init__(self, server: HttpServer) -> None:
        super().__init__()
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.server._accepted(SocketStream(self.transport, self))


@dataclass
class _Exchange:
    """One request read and answered: the bytes to send and what comes after them."""

    answer: bytes
    keep_alive: bool = False
    body: int | None = 0  # the request's body still to skip: its length, None if chunked
    upgrade: Upgrade | None = None
    announced: int = 0  # the body a refused request announced (Content-Length), for lingering


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
        max_connections: int | None = MAX_CONNECTIONS,
        manner: Manner = Manner(),
        tls: ssl.SSLContext | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.name = name
        self.headers = headers
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.manner = manner
        self.tls = tls
        self.log = logger
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
                lambda: _Protocol(self), self.host, self.port, reuse_address=True, ssl=self.tls
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
        if self.max_connections is not None and len(self._tasks) >= self.max_connections:
            stream.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(stream), name="detour-http")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: SocketStream) -> None:
        try:
            idle: float | None = None  # the first request: only the head timeout
            while True:
                exchange = await self._exchange(stream, idle)
                if exchange is None:
                    return  # the client left, or was quiet too long: close (below)
                async with asyncio.timeout(WRITE_TIMEOUT):
                    stream.write(exchange.answer)
                    await stream.drain()
                if exchange.upgrade is not None:
                    await self._run_upgrade(exchange.upgrade, stream)
                    return
                if not exchange.keep_alive:
                    if self.manner.lingering is not None:
                        pending = exchange.body if exchange.body != 0 else exchange.announced
                        await _linger_for_body(stream, pending, self.manner.lingering)
                    else:
                        await _linger(stream)
                    return
                if exchange.body != 0 and not await self._skip_body(stream, exchange.body):
                    return
                idle = self.manner.keep_alive
        except (OSError, TimeoutError, ProtocolError):
            stream.abort()  # the client went away, stopped reading, or sent a broken body
        finally:
            stream.close()

    async def _run_upgrade(self, upgrade: Upgrade, stream: Stream) -> None:
        try:
            await upgrade.run(stream)
        except (OSError, TimeoutError, ProtocolError):
            raise
        except Exception:  # a bug: in the log with its traceback, not lost in a task
            self.log.exception("%s: the upgraded connection failed", self.name)
            stream.abort()

    async def answer(self, stream: Stream) -> bytes | None:
        """Read one request off `stream` and return the whole answer to send, or None to
        just close (the client left mid-head). Any Stream will do (the tests script one)."""
        exchange = await self._exchange(stream, None)
        return None if exchange is None else exchange.answer

    async def _exchange(self, stream: Stream, idle: float | None) -> _Exchange | None:
        manner = self.manner
        try:
            if idle is not None:  # between requests: wait for the next one's first bytes
                async with asyncio.timeout(idle):
                    first = await stream.read(65536)
                if not first:
                    return None
                stream.unread(first)
            async with asyncio.timeout(self.head_timeout):
                raw = await read_request_head(
                    stream, MAX_HEAD, manner.line_limit, manner.lenient, manner.http09
                )
        except TimeoutError:
            if idle is not None or not manner.answer_timeout:
                return None  # quiet too long: close without a word
            return self._error(408, "the request head did not arrive in time")
        except asyncio.LimitOverrunError:
            return self._error(431, "request head too large")
        except asyncio.IncompleteReadError:
            return None
        except HeadError as exc:
            return self._error(exc.status, str(exc))
        simple = manner.http09 and _is_simple(raw)
        try:
            if simple:
                # Split as _is_simple did (ASCII whitespace): str.split() would also cut at
                # \x1c-\x1f, \x85 and \xa0, and find a third part.
                method, target = (part.decode("latin-1") for part in raw.split())
                head = RequestHead(method, target, "HTTP/0.9", [])
            else:
                head = parse_request_head(raw, lenient=manner.lenient)
            if manner.field_limit is not None and any(
                len(name) + len(value) + 2 > manner.field_limit for name, value in head.headers
            ):
                raise HeadError("a header field too long", 431)
            request = request_from_head(
                head,
                stream.get_extra_info("peername"),
                stream.get_extra_info("sockname"),
                lenient=manner.lenient,
            )
            body = body_length(request) if manner.keep_alive else 0
        except HeadError as exc:
            status = exc.status
            if status == 505 and not _servable_target(raw):
                status = 400  # a version we do not speak, on a request we could not serve
            exchange = self._error(status, str(exc), simple=simple)
            exchange.announced = _announced_length(raw)
            return exchange
        try:
            answer = await self.handler(request)
        except Exception:
            self.log.exception("%s: %s %s failed", self.name, request.method, request.path)
            answer = Response.text(500, "internal error; see detour's log\n")
        if isinstance(answer, Upgrade):
            if simple:  # (no handler upgrades a request without headers)
                return _Exchange(b"")
            return _Exchange(answer.encode(server=manner.server), upgrade=answer)
        if simple:
            return _Exchange(answer.body)  # HTTP/0.9: the body alone, then the end
        keep_alive = (
            manner.keep_alive > 0
            and not answer.close
            and _wants_keep_alive(request)
            and (body is None or body <= MAX_SKIP)
        )
        wire = answer.encode(
            head_only=request.method == "HEAD",
            extra=self.headers,
            server=manner.server,
            keep_alive=keep_alive,
        )
        return _Exchange(wire, keep_alive and not answer.hang_up, body)

    def _error(self, status: int, message: str, *, simple: bool = False) -> _Exchange:
        self.log.debug("%s: a bad request (%d %s)", self.name, status, message)
        response = self.manner.error(status, message)
        if simple:
            return _Exchange(response.body)
        return _Exchange(response.encode(extra=self.headers, server=self.manner.server))

    async def _skip_body(self, stream: Stream, length: int | None) -> bool:
        """Read past a request body the handler did not want (keep-alive): its length, or
        its chunks. False when it is too large or too slow to be worth it: then close (with
        `lingering`, too slow is that long without a byte, as nginx discards a body)."""
        if self.manner.lingering is not None:
            stream = _Quiet(stream, self.manner.lingering)
        try:
            async with asyncio.timeout(self.head_timeout):
                if length is not None:
                    while length:
                        chunk = await stream.read(min(length, 65536))
                        if not chunk:
                            return False
                        length -= len(chunk)
                    return True
                chunked = ChunkedBody()
                while not chunked.done:
                    chunk = await stream.read(65536)
                    if not chunk:
                        return False
                    try:
                        used = chunked.feed(chunk)
                    except ProtocolError:
                        return False  # not a chunked body after all: close, as at its end
                    if used < len(chunk):
                        stream.unread(chunk[used:])
                    if chunked.size > MAX_SKIP:
                        return False
                return True
        except TimeoutError:
            return False


def _wants_keep_alive(request: RequestHead) -> bool:
    """RFC 9112 §9.3: HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes
    unless told to keep it."""
    tokens = request.tokens("connection")
    if "close" in tokens:
        return False
    return request.version == "HTTP/1.1" or "keep-alive" in tokens


def _is_simple(raw: bytes) -> bool:
    """An HTTP/0.9 request: one line of two parts (read_request_head returns it alone)."""
    return raw.count(b"\n") == 1 and len(raw.split()) == 2


def _servable_target(raw: bytes) -> bool:
    target = raw.split(b" ", 2)[1] if raw.count(b" ") >= 2 else b""
    return target.startswith(b"/") or target[:8].lower().startswith((b"http://", b"https://"))


class _Quiet:
    """A stream's reads, each of which must bring something within `quiet` seconds."""

    def __init__(self, stream: Stream, quiet: float) -> None:
        self.stream, self.quiet = stream, quiet

    async def read(self, n: int) -> bytes:
        async with asyncio.timeout(self.quiet):
            return await self.stream.read(n)

    def unread(self, data: bytes) -> None:
        self.stream.unread(data)


LINGERING_TIME = 30.0  # nginx's lingering_time: the most a lingering close waits in all


async def _linger_for_body(stream: Stream, pending: int | None, quiet: float) -> None:
    """nginx's close after a last answer: a request body that has not all arrived (`pending`
    bytes, None: chunked, of unknown length) is read and dropped until the client has been
    quiet for `quiet` seconds, with the connection still open both ways; then it closes. With
    no body pending it closes at once."""
    if pending == 0:
        return
    try:
        async with asyncio.timeout(LINGERING_TIME):
            while pending is None or pending > 0:
                async with asyncio.timeout(quiet):
                    chunk = await stream.read(65536)
                if not chunk:
                    return
                if pending is not None:
                    pending -= len(chunk)
    except TimeoutError:
        pass


def _announced_length(raw: bytes) -> int:
    """The first Content-Length a request head announces (0 without a readable one): what a
    server that refused the head may still see arrive."""
    for line in raw.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() and len(value) <= 18 else 0
    return 0


async def _linger(stream: Stream) -> None:
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
