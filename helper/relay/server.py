"""The relay (`detour relay`): the far end of fronted tunnels.

An HTTP/1.1 server (helper/http_server.py). A request for the secret path that upgrades to a
WebSocket and carries a valid access token becomes a tunnel: TLS 1.3 inside the WebSocket
(the relay's pinned certificate; a client certificate from the relay's own CA, of a client
not revoked), one request naming a destination, the destination dialed under the relay's
policy, then the bytes relayed both ways. Every other request -- another path, a wrong or
revoked token, a replayed token, a browser, junk -- gets an ordinary small website
(decoy.py), identical whatever the reason, so a prober learns nothing.

Revocation takes effect in open tunnels too: each new connection in a multiplexed tunnel
checks the client's current status (clients.json, read again when it changes), and a tunnel
whose client was revoked (or re-issued) is closed, streams and all; tunnels that open no new
connection are checked every RECHECK seconds.

Destinations: the configured services only (by default), and never loopback, private or
link-local addresses. Per-client connection limits, idle timeouts, a graceful stop. The relay
keeps no session state but the replay cache (replay.py), which every relay serving from the
same state directory shares, so any number of them can sit behind one CDN or load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections import Counter
from typing import Any

from transports import DialError, Endpoint, Failure, Op, Stream
from transports.base import IPAddress
from transports.direct import DirectDialer
from transports.fronted.accesskey import TokenCheck, read_access_token
from transports.fronted.capped import CARRIER_PROTOCOL, CARRIER_PROTOCOL_EARLY
from transports.fronted.client import COOKIE
from transports.fronted.datagrams import ASSOCIATE
from transports.fronted.mux import ALPN, MuxSession, MuxStream
from transports.fronted.protocol import (
    NeedMore,
    ProtocolError,
    encode_failure,
    encode_success,
    parse_request,
)
from transports.guard import AddressPolicy, LocalAddresses
from transports.heap import keep_large_buffers
from transports.resolver import Resolver, StaticResolver
from transports.tls import tls_accept
from transports.websocket import WebSocketStream, accept_headers

from ..http_server import HttpServer, Request, Response, Upgrade
from ..proxy.relay import relay
from ..services import ServiceTable
from . import decoy
from .carriers import CarrierHub
from .config import RelayConfig
from .keys import ClientRecord, RelayKeys, RelayKeysError
from .replay import ReplayCache
from .udp import RelayDatagrams
from .upstream import Upstream

__all__ = ["RelayServer", "cookie"]

log = logging.getLogger("detour.relay")

MAX_REQUEST = 3 + 255 + 2
RECHECK = 5.0  # seconds between checks of open tunnels' clients (new connections: at once)


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


def cookie(request: Request, name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie fields (RFC 6265 §5.4: pairs
    separated by semicolons), or None."""
    for field, value in request.headers:
        if field.lower() != "cookie":
            continue
        for pair in value.split(";"):
            key, sep, text = pair.strip().partition("=")
            if sep and key.strip() == name:
                text = text.strip()
                if len(text) >= 2 and text[0] == text[-1] == '"':
                    text = text[1:-1]
                return text
    return None


class RelayServer:
    # The capped mode's subprotocols, /2 first (it also takes a hello sent with the upgrade).
    carrier_protocols: tuple[str, ...] = (CARRIER_PROTOCOL_EARLY, CARRIER_PROTOCOL)

    def __init__(
        self,
        config: RelayConfig,
        keys: RelayKeys,
        *,
        resolver: Resolver | None = None,
        local_address: str | None = None,
        recheck: float = RECHECK,
    ) -> None:
        keep_large_buffers()  # the tunnels' 256 KiB buffers without page faults
        self.config = config
        self.keys = keys
        keys.secure()  # before anything is read: RelayKeysError for a secret others can read
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
        # Two hops: destinations through a chain of the relay's own (upstream.py).
        self.upstream = Upstream(config.upstream, config, base) if config.upstream else None
        self.services = ServiceTable(config.services)
        self.udp = RelayDatagrams(self)  # UDP associations in tunnels (udp.py)
        # The website's files date from when this relay's keys were made: its own time,
        # not one every relay would share.
        self.website = decoy.Website(config.decoy_server, int(keys.relay_cert.stat().st_mtime))
        self.per_client: Counter[str] = Counter()  # tunnels (WebSockets)
        self.streams_of: Counter[str] = Counter()  # connections in multiplexed tunnels
        self.sessions: set[MuxSession] = set()
        self.tunnels: set[asyncio.Task[Any]] = set()
        # Each open tunnel (after its inner TLS): whose it is (name, certificate fingerprint)
        # and how to end it, for revocation.
        self.holders: dict[object, tuple[str, str, Any]] = {}
        self.replays = ReplayCache(config.state)
        self.recheck = recheck
        self._watch: asyncio.Task[None] | None = None
        self._http: HttpServer | None = None
        self._stopping = False
        # Capped sessions (carriers.py): tunnels carried across many short connections.
        self.carriers = CarrierHub(
            self._serve_capped,
            per_client=config.connections_per_client,
            per_session=config.carriers_per_session,
        )

    # --- the website, and the way in ----------------------------------------------------

    async def handle(self, request: Request) -> Response | Upgrade:
        """Every request, any method and path: the website, or a tunnel's upgrade."""
        check = self._tunnel_token(request)
        if check is None or self._stopping:
            return self.decoy(request)
        name = check.name
        try:
            headers, chosen = accept_headers(request, self.carrier_protocols)
        except ProtocolError as exc:
            log.info("relay: %s: not a WebSocket upgrade (%s)", name, exc)
            return self.decoy(request)
        if not self.replays.first_use(check.ident, check.expires + 1):
            log.warning("relay: %s's token came again (a replay): the website", name)
            return self.decoy(request)
        if chosen in (CARRIER_PROTOCOL, CARRIER_PROTOCOL_EARLY):
            return Upgrade(headers, lambda stream: self.carrier(stream, name, chosen))
        if self.per_client[name] >= self.config.connections_per_client:
            log.info(
                "relay: %s is at its limit of %d tunnels", name, self.config.connections_per_client
            )
            return self.decoy(request)
        return Upgrade(headers, lambda stream: self.tunnel(stream, name))

    def _tunnel_token(self, request: Request) -> TokenCheck | None:
        path = self.keys.current_path()
        if request.method != "GET" or request.path != path:
            return None
        if "websocket" not in request.tokens("upgrade"):
            return None
        token = cookie(request, COOKIE)
        if not token:
            return None
        tokens = {n: bytes.fromhex(r.token) for n, r in self._clients().items()}
        return read_access_token(token, tokens, path)

    def _clients(self) -> dict[str, ClientRecord]:
        """The clients allowed now; none while clients.json cannot be read (said as an error:
        a damaged file shuts every client out rather than letting a revoked one in)."""
        try:
            return self.keys.current()
        except RelayKeysError as exc:
            log.error("relay: %s: no client is let in until it is fixed", exc)
            return {}

    def _allowed(self, name: str, fingerprint: str) -> bool:
        record = self._clients().get(name)
        return record is not None and record.fingerprint == fingerprint

    def decoy(self, request: Request) -> Response:
        """The ordinary website: the same answer to every request that is not a tunnel."""
        return self.website.answer(request)

    # --- a tunnel -------------------------------------------------------------------------

    async def tunnel(self, stream: Stream, name: str) -> None:
        """After the 101: the WebSocket, with TLS inside it."""
        ws = WebSocketStream(stream, client=False)
        self.per_client[name] += 1
        task = asyncio.current_task()
        assert task is not None
        self.tunnels.add(task)
        try:
            await self._serve(ws, name)
        finally:
            self.tunnels.discard(task)
            self.per_client[name] -= 1
            ws.close()

    async def carrier(self, stream: Stream, name: str, protocol: str = CARRIER_PROTOCOL) -> None:
        """After the 101 of a capped session's carrier (carriers.py)."""
        ws = WebSocketStream(stream, client=False, subprotocol=protocol)
        try:
            await self.carriers.carrier(ws, name, protocol)
        finally:
            ws.close()

    async def _serve_capped(self, stream: Stream, name: str) -> None:
        """A capped session's byte stream: served as any tunnel is."""
        self.per_client[name] += 1
        task = asyncio.current_task()
        assert task is not None
        self.tunnels.add(task)
        try:
            await self._serve(stream, name)
        finally:
            self.tunnels.discard(task)
            self.per_client[name] -= 1

    async def _serve(self, ws: Stream, name: str) -> None:
        try:
            tls = await tls_accept(ws, self.server_tls, timeout=self.config.handshake_timeout)
        except DialError as exc:
            log.info("relay: %s: inner TLS failed: %s", name, exc)
            return
        fingerprint = hashlib.sha256(
            tls.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
        ).hexdigest()
        if not self._allowed(name, fingerprint):
            log.warning("relay: a tunnel with %s's token but not its certificate: closed", name)
            tls.abort()
            return
        if tls.get_extra_info("ssl_object").selected_alpn_protocol() == ALPN:
            await self._serve_mux(tls, name, fingerprint)
        else:
            holder = object()
            self.holders[holder] = (name, fingerprint, tls.abort)
            try:
                await self._serve_one(tls, name)
            finally:
                del self.holders[holder]

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

    async def _serve_mux(self, tls: Stream, name: str, fingerprint: str) -> None:
        """A tunnel that carries many connections (transports/fronted/mux.py). It ends when
        the client closes it, when it has had no connection for the idle timeout, when the
        client is revoked, or when the relay stops (GOAWAY, then the open connections'
        grace)."""
        session = MuxSession(
            tls,
            on_open=lambda stream, target: self._open_stream(name, fingerprint, stream, target),
            name=f"relay: {name}",
        )
        self.sessions.add(session)
        self.holders[session] = (name, fingerprint, session.close)
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
            self.holders.pop(session, None)
            await session.aclose()

    async def _open_stream(
        self, name: str, fingerprint: str, stream: MuxStream, target: Endpoint
    ) -> None:
        """A new connection in a tunnel: only for a client still allowed. A revoked (or
        re-issued) client's connection is refused and its tunnel closed, with every
        connection in it."""
        if not self._allowed(name, fingerprint):
            log.warning("relay: %s was revoked: its tunnel is closed", name)
            stream.session.refuse(stream, _REVOKED)
            stream.session.close()
            return
        if target == ASSOCIATE:
            await self.udp.serve(name, stream)
            return
        await self._serve_stream(name, stream, target)

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

    def destination_refusal(self, target: Endpoint) -> tuple[str, str] | None:
        """Why the destination policy refuses `target` before any name is resolved, for TCP
        streams and UDP associations alike: (what the client is told, the log's words)."""
        ip = target.ip
        if ip is not None and self.policy.refusal(ip) is not None:
            return f"{target} is not reachable here", "a private address"
        if self.config.allow == "services" and self.services.match(target) is None:
            return f"{target} is not a service this relay serves", "not a configured service"
        return None

    async def _dial(self, name: str, target: Endpoint) -> Stream:
        refused = self.destination_refusal(target)
        if refused is not None:
            log.warning("relay: %s asked for %s: %s, refused", name, target, refused[1])
            raise DialError(Failure.PROXY_REFUSED, Op.CONNECT, refused[0])
        if self.upstream is not None:
            return await self.upstream.dial(name, target)
        try:
            return await self.dialer.dial(target)
        except DialError as exc:
            if exc.failure is Failure.PROXY_REFUSED:
                log.warning("relay: %s asked for %s: %s", name, target, exc.detail)
            raise

    # --- running --------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        context = None
        if self.config.tls_cert and self.config.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self._http = HttpServer(
            self.handle,
            self.config.listen.host,
            self.config.listen.port,
            name="relay",
            head_timeout=decoy.HEAD_TIMEOUT,
            max_connections=None,
            manner=decoy.manner(self.config.decoy_server),
            tls=context,
            logger=log,
        )
        await self._http.start()
        self._watch = asyncio.ensure_future(self._watch_revocations())
        address = self._http.address
        assert address is not None
        host, port = address
        log.info(
            "relay listening on %s (%d clients)", Endpoint(host, port), len(self.keys.active())
        )
        self.udp.started()  # its UDP counters in the log while they change (udp.py)
        return host, port

    async def _watch_revocations(self) -> None:
        """Close the tunnels of clients revoked since they opened (those that open new
        connections are closed at the first one; these may have one long connection)."""
        while True:
            await asyncio.sleep(self.recheck)
            self.close_revoked()

    def close_revoked(self) -> int:
        """End every open tunnel whose client is no longer allowed; how many."""
        ended = 0
        for name, fingerprint, end in list(self.holders.values()):
            if not self._allowed(name, fingerprint):
                log.warning("relay: %s was revoked: its tunnel is closed", name)
                end()
                ended += 1
        return ended

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking tunnels; give the open ones `grace` seconds, then close them."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        for session in self.sessions:
            session.go_away()
        if self.tunnels:
            _, pending = await asyncio.wait(set(self.tunnels), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.carriers.aclose()
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self.upstream is not None:
            await self.upstream.aclose()  # the second hop's tunnels
        self.replays.close()
        await self.udp.stopped()  # the log line of what it carried of UDP (udp.py)


_REVOKED = encode_failure(
    DialError(Failure.PROXY_REFUSED, Op.CONNECT, "this access key was revoked")
)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except ConnectionError:
        pass  # the client is gone; nothing to tell it
