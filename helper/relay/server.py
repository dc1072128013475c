"""The relay (`detour relay`): the far end of fronted tunnels.

An aiohttp web app. A request for the secret path that upgrades to a WebSocket and carries a
valid access token becomes a tunnel: TLS 1.3 inside the WebSocket (the relay's pinned
certificate; a client certificate from the relay's own CA, of a client not revoked), one
request naming a destination, the destination dialed under the relay's policy, then the bytes
relayed both ways. Every other request -- another path, a wrong or revoked token, a browser --
gets an ordinary small website, identical whatever the reason, so a prober learns nothing.

Destinations: the configured services only (by default), and never loopback, private or
link-local addresses. Per-client connection limits, idle timeouts, a graceful stop. The relay
keeps no session state, so any number of them can sit behind one CDN or load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections import Counter, deque
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web, web_protocol

from transports import DialError, Endpoint, Failure, Op, Stream
from transports.base import IPAddress
from transports.direct import DirectDialer
from transports.fronted.accesskey import check_access_token
from transports.fronted.client import COOKIE
from transports.fronted.mux import ALPN, MuxSession, MuxStream
from transports.fronted.protocol import (
    NeedMore,
    ProtocolError,
    encode_failure,
    encode_success,
    parse_request,
)
from transports.guard import AddressPolicy, LocalAddresses
from transports.resolver import Resolver, StaticResolver
from transports.tls import tls_accept

from ..proxy.relay import relay
from ..services import ServiceTable
from .config import RelayConfig
from .keys import RelayKeys

__all__ = ["RelayServer", "ServerWebSocketStream"]

log = logging.getLogger("detour.relay")

MAX_REQUEST = 3 + 255 + 2
MESSAGE_SIZE = 256 * 1024

DECOY_HOME = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Ink &amp; Margin</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:Georgia,serif;max-width:38em;margin:3em auto;padding:0 1em;color:#222}
h1{font-weight:normal}footer{margin-top:4em;color:#777;font-size:.9em}</style></head>
<body><h1>Ink &amp; Margin</h1>
<p>Notes on fountain pens, paper and the slow pleasure of writing by hand.</p>
<h2>Latest</h2><ul><li>Iron gall inks, revisited</li><li>Why Tomoe River paper feathers less</li>
<li>Cleaning a piston filler without taking it apart</li></ul>
<footer>&copy; Ink &amp; Margin</footer></body></html>
"""
DECOY_MISSING = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Not found - Ink &amp; Margin</title></head>
<body><h1>Not found</h1><p>There is nothing here. <a href="/">Back to the front page</a>.</p>
</body></html>
"""


class ServerWebSocketStream(Stream):
    """A Stream over an aiohttp server WebSocket's binary messages."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._pending: deque[bytes] = deque()  # received message bytes not yet read
        self._eof = False
        self._outgoing: list[bytes] = []
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._failed: BaseException | None = None

    async def read(self, n: int = 65536) -> bytes:
        while not self._pending and not self._eof:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                if message.data:
                    self._pending.append(message.data)
            elif message.type in (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
            ):  # fmt: skip
                self._eof = True
            elif message.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionResetError(f"WebSocket error: {self.ws.exception()}")
            else:
                raise ConnectionResetError("a text message in a byte tunnel")
        if not self._pending:
            return b""
        # A whole message is handed on as it is (no copy) when it fits.
        data = self._pending[0]
        if len(data) <= n:
            self._pending.popleft()
            return bytes(data)
        self._pending[0] = data[n:]
        return bytes(data[:n])

    def unread(self, data: bytes) -> None:
        if data:
            self._pending.appendleft(bytes(data))

    def write(self, data: bytes) -> None:
        if self._failed is not None:
            raise ConnectionResetError("the WebSocket failed")
        if data:
            self._outgoing.append(bytes(data))
            if self._sender is None or self._sender.done():
                self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self._outgoing:
                # What piled up while the last message went out, as one message of at most
                # about MESSAGE_SIZE (the client takes messages of up to 1 MiB).
                count = size = 0
                for chunk in self._outgoing:
                    if count and size + len(chunk) > MESSAGE_SIZE:
                        break
                    count += 1
                    size += len(chunk)
                await self.ws.send_bytes(b"".join(self._outgoing[:count]))
                del self._outgoing[:count]
        except (ConnectionError, RuntimeError) as exc:
            self._failed = exc
            self._outgoing.clear()

    async def drain(self) -> None:
        while self._sender is not None and not self._sender.done():
            await asyncio.shield(self._sender)
        if self._failed is not None:
            raise ConnectionResetError("the WebSocket failed")

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("WebSockets cannot half-close")

    def close(self) -> None:
        if self._closer is None:
            self._closer = asyncio.ensure_future(self._close(drain=True))

    def abort(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self._closer is None:
            self._closer = asyncio.ensure_future(self._close(drain=False))

    async def _close(self, drain: bool) -> None:
        try:
            if drain:
                await self.drain()
        except ConnectionError:
            pass  # nothing more can be sent anyway; close what is left
        finally:
            await self.ws.close(code=1000 if drain else 1011)
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def is_closing(self) -> bool:
        return self.ws.closed or self._failed is not None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _PolicyResolver:
    """Resolves for the relay and refuses what the relay must never reach."""

    def __init__(self, inner: Resolver, policy: AddressPolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def resolve(self, host: str) -> list[IPAddress]:
        addresses = await self.inner.resolve(host)
        allowed = self.policy.allowed(addresses)
        if not allowed:
            raise DialError(
                Failure.PROXY_REFUSED, Op.CONNECT, f"{host} resolves only to private addresses"
            )
        return allowed


# What nginx sends for an error of its own (a request it cannot parse), as the decoy answers.
DECOY_ERROR = """<html>
<head><title>{status}</title></head>
<body>
<center><h1>{status}</h1></center>
<hr><center>{server}</center>
</body>
</html>
"""


class _DecoyErrors(web_protocol.RequestHandler):
    """aiohttp answers a request it cannot parse with its own text and `Server: Python/3.x
    aiohttp/3.x`, and logs a traceback: that would tell a prober what listens here, and let
    anyone flood the log. Answer as the web server the decoy claims to be, and note it at
    debug level (probers send junk all day)."""

    decoy_server = "nginx"

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.debug("relay: an unreadable request from %s (%s)", request.remote, status)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent; the connection is broken")
        try:
            code = HTTPStatus(status)
        except ValueError:
            code = HTTPStatus.BAD_REQUEST
        page = DECOY_ERROR.format(status=f"{code.value} {code.phrase}", server=self.decoy_server)
        response = _Http11Response(status=code.value, text=page, content_type="text/html")
        response.headers["Server"] = self.decoy_server
        response.force_close()
        return response


class _Http11Response(web.Response):
    """An error answer with nginx's status line. aiohttp answers what it could not parse in
    the version of its placeholder request, HTTP/1.0; nginx says HTTP/1.1 -- a difference a
    prober could use to tell the decoy from the server it claims to be."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        if request.version < aiohttp.HttpVersion11:
            request = _Version11(request)  # type: ignore[assignment]
        return await super().prepare(request)


class _Version11:
    """A request seen as HTTP/1.1 (for the status line); everything else is the request's."""

    version = aiohttp.HttpVersion11

    def __init__(self, request: web.BaseRequest) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


class _DecoyServer(web.Server):
    """aiohttp's low-level server with _DecoyErrors as its protocol."""

    def __init__(self, handler: Any, decoy_server: str, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.decoy_server = decoy_server
        self.handler_kwargs = kwargs

    def __call__(self) -> web_protocol.RequestHandler:
        protocol = _DecoyErrors(self, loop=asyncio.get_event_loop(), **self.handler_kwargs)
        protocol.decoy_server = self.decoy_server
        return protocol


class RelayServer:
    def __init__(
        self,
        config: RelayConfig,
        keys: RelayKeys,
        *,
        resolver: Resolver | None = None,
        local_address: str | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.server_tls = keys.server_context()
        if config.multiplex:
            self.server_tls.set_alpn_protocols([ALPN])
        base = resolver or config.resolver.build()
        if config.hosts:
            base = StaticResolver(config.hosts, fallback=base)
        # The same rules as for a LAN client of the listeners: never private, loopback, ...,
        # and never this machine's own addresses (a service listening on the relay's public
        # address, ssh say, is not for its clients). A lab that stands the internet on
        # loopback ranges (`destinations.public`) is all on this machine: no own-address
        # check there.
        local = None if config.public_networks else LocalAddresses()
        self.policy = AddressPolicy(config.public_networks, local)
        self.dialer = DirectDialer(
            _PolicyResolver(base, self.policy),
            connect_timeout=config.handshake_timeout,
            local_address=local_address,
        )
        self.services = ServiceTable(config.services)
        self.per_client: Counter[str] = Counter()  # tunnels (WebSockets)
        self.streams_of: Counter[str] = Counter()  # connections in multiplexed tunnels
        self.sessions: set[MuxSession] = set()
        self.tunnels: set[asyncio.Task[Any]] = set()
        self._runner: web.BaseRunner | None = None
        self._stopping = False

    # --- the web app ----------------------------------------------------------------------

    def web_server(self) -> web.Server:
        """Every request, any method and path, goes to handle()."""
        return _DecoyServer(self.handle, self.config.decoy_server, access_log=None)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        name = self._tunnel_client(request)
        if name is None or self._stopping:
            return self.decoy(request)
        if self.per_client[name] >= self.config.connections_per_client:
            log.info(
                "relay: %s is at its limit of %d tunnels", name, self.config.connections_per_client
            )
            return self.decoy(request)
        return await self.tunnel(request, name)

    def _tunnel_client(self, request: web.BaseRequest) -> str | None:
        if request.method != "GET" or request.path != self.keys.path:
            return None
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        tokens = {n: bytes.fromhex(r.token) for n, r in self.keys.active().items()}
        return check_access_token(token, tokens, self.keys.path)

    def decoy(self, request: web.BaseRequest) -> web.Response:
        """The ordinary website: the same answer to every request that is not a tunnel."""
        home = request.path in ("/", "/index.html")
        body = DECOY_HOME if home else DECOY_MISSING
        response = web.Response(
            status=200 if home else 404,
            body=b"" if request.method == "HEAD" else body,
            content_type="text/html",
            charset="utf-8",
        )
        response.headers["Server"] = self.config.decoy_server
        return response

    # --- a tunnel -------------------------------------------------------------------------

    async def tunnel(self, request: web.BaseRequest, name: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4 << 20, autoping=True)
        await ws.prepare(request)
        self.per_client[name] += 1
        task = asyncio.current_task()
        assert task is not None
        self.tunnels.add(task)
        try:
            await self._serve(ws, name)
        finally:
            self.tunnels.discard(task)
            self.per_client[name] -= 1
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, name: str) -> None:
        stream = ServerWebSocketStream(ws)
        try:
            tls = await tls_accept(stream, self.server_tls, timeout=self.config.handshake_timeout)
        except DialError as exc:
            log.info("relay: %s: inner TLS failed: %s", name, exc)
            return
        fingerprint = hashlib.sha256(
            tls.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
        ).hexdigest()
        record = self.keys.active().get(name)
        if record is None or record.fingerprint != fingerprint:
            log.warning("relay: a tunnel with %s's token but not its certificate: closed", name)
            tls.abort()
            return
        if tls.get_extra_info("ssl_object").selected_alpn_protocol() == ALPN:
            await self._serve_mux(tls, name)
        else:
            await self._serve_one(tls, name)

    async def _serve_one(self, tls: Stream, name: str) -> None:
        """A tunnel that carries one connection (a client that does not multiplex)."""
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                target = await self._read_request(tls)
        except (TimeoutError, ProtocolError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("relay: %s: no valid request (%s)", name, type(exc).__name__)
            tls.abort()
            return
        started = time.monotonic()
        try:
            upstream = await self._dial(name, target)
        except DialError as exc:
            tls.write(encode_failure(exc))
            await _quietly(tls.drain())
            tls.close()
            return
        tls.write(encode_success())
        stats = await relay(tls, upstream, idle_timeout=self.config.idle_timeout)
        log.info(
            "relay: %s -> %s: %d bytes up, %d down, %.1fs",
            name, target, stats.up, stats.down, time.monotonic() - started,
        )  # fmt: skip

    async def _serve_mux(self, tls: Stream, name: str) -> None:
        """A tunnel that carries many connections (transports/fronted/mux.py). It ends when
        the client closes it, when it has had no connection for the idle timeout, or when
        the relay stops (GOAWAY, then the open connections' grace)."""
        session = MuxSession(
            tls, on_open=lambda stream, target: self._serve_stream(name, stream, target),
            name=f"relay: {name}",
        )  # fmt: skip
        self.sessions.add(session)
        loop = asyncio.get_running_loop()
        idle = self.config.idle_timeout
        try:
            if self._stopping:
                session.go_away()
            while session.alive:
                idle_for = loop.time() - session.idle_since
                if not session.streams and (session.going_away or idle_for >= idle):
                    break
                session.changed.clear()
                wait = idle - idle_for if not session.streams else idle
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.01)):
                        await session.changed.wait()
        finally:
            self.sessions.discard(session)
            await session.aclose()

    async def _serve_stream(self, name: str, stream: MuxStream, target: Endpoint) -> None:
        session = stream.session
        limit = self.config.connections_per_client
        if self.streams_of[name] >= limit:
            log.info("relay: %s is at its limit of %d connections", name, limit)
            session.refuse(stream, encode_failure(DialError(
                Failure.PROXY_REFUSED, Op.CONNECT,
                f"this access key has {limit} connections open, the relay's limit",
            )))  # fmt: skip
            return
        self.streams_of[name] += 1
        started = time.monotonic()
        try:
            try:
                upstream = await self._dial(name, target)
            except DialError as exc:
                session.refuse(stream, encode_failure(exc))
                return
            if stream.is_closing():  # the client gave up waiting
                upstream.abort()
                return
            session.accept(stream)
            stats = await relay(stream, upstream, idle_timeout=self.config.idle_timeout)
            log.info(
                "relay: %s -> %s: %d bytes up, %d down, %.1fs",
                name, target, stats.up, stats.down, time.monotonic() - started,
            )  # fmt: skip
        finally:
            self.streams_of[name] -= 1

    async def _read_request(self, tls: Stream) -> Endpoint:
        buf = b""
        while True:
            try:
                used, target = parse_request(buf)
            except NeedMore:
                if len(buf) >= MAX_REQUEST:
                    raise ProtocolError("request too long") from None
                chunk = await tls.read(MAX_REQUEST - len(buf))
                if not chunk:
                    raise asyncio.IncompleteReadError(buf, None) from None
                buf += chunk
                continue
            tls.unread(buf[used:])
            return target

    async def _dial(self, name: str, target: Endpoint) -> Stream:
        ip = target.ip
        if ip is not None and self.policy.refusal(ip) is not None:
            log.warning("relay: %s asked for %s: a private address, refused", name, target)
            raise DialError(Failure.PROXY_REFUSED, Op.CONNECT, f"{target} is not reachable here")
        if self.config.allow == "services" and self.services.match(target) is None:
            log.warning("relay: %s asked for %s: not a configured service, refused", name, target)
            raise DialError(
                Failure.PROXY_REFUSED, Op.CONNECT, f"{target} is not a service this relay serves"
            )
        try:
            return await self.dialer.dial(target)
        except DialError as exc:
            if exc.failure is Failure.PROXY_REFUSED:
                log.warning("relay: %s asked for %s: %s", name, target, exc.detail)
            raise

    # --- running --------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        self._runner = web.ServerRunner(self.web_server(), handle_signals=False)
        await self._runner.setup()
        context = None
        if self.config.tls_cert and self.config.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        site = web.TCPSite(
            self._runner, self.config.listen.host, self.config.listen.port, ssl_context=context
        )
        await site.start()
        host, port = self._runner.addresses[0][:2]
        log.info(
            "relay listening on %s (%d clients)", Endpoint(host, port), len(self.keys.active())
        )
        return host, port

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking tunnels; give the open ones `grace` seconds, then close them."""
        self._stopping = True
        for session in self.sessions:
            session.go_away()
        if self.tunnels:
            _, pending = await asyncio.wait(set(self.tunnels), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except ConnectionError:
        pass  # the client is gone; nothing to tell it
