"""The lab resolver's servers: UDP and TCP (RFC 1035 4.2) on one address and port, DNS over
TLS (RFC 7858, TCP only), and
DNS-over-HTTPS (RFC 8484) routes for the lab's HTTPS server, all answering with a
LabResolver (dns.py, sans-IO).

Nothing in the proxy path imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import logging
import re
import ssl
from typing import cast

from aiohttp import web

from .dns import DNS_MESSAGE, HEADER_SIZE, MAX_MESSAGE, LabResolver

__all__ = ["DnsServer", "doh_routes"]

# The resolver's logger: one source of lab DNS lines, whichever part writes them.
log = logging.getLogger("detour.lab.dns")

# --- UDP and TCP -------------------------------------------------------------------------

_BIND_ATTEMPTS = 20


class DnsServer:
    """UDP and TCP on one address and port, answering with a LabResolver.

    Port 0 picks a free port, the same for UDP and TCP. A TCP client may send several queries
    on one connection (RFC 7766 6.2.1); it is closed after `idle_timeout` seconds without a
    byte from it, at once on a length prefix too short for a DNS message.
    """

    def __init__(
        self,
        resolver: LabResolver,
        host: str,
        port: int,
        *,
        idle_timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # A name could bind several sockets, each with its own free port.
            raise ValueError(f"DNS server host {host!r}: expected an IP address") from None
        if not 0 <= port < 65536:
            raise ValueError(f"DNS server port {port} out of range 0-65535")
        self.resolver = resolver
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.tls = tls  # DNS over TLS (RFC 7858): TCP only, no UDP
        self._tcp: asyncio.Server | None = None
        self._udp: _UdpEndpoint | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._connections: set[_TcpConnection] = set()
        self._bound_port = 0

    @property
    def address(self) -> tuple[str, int]:
        if self._tcp is None:
            raise RuntimeError("DnsServer.address: the server is not running")
        return self.host, self._bound_port

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._tcp is not None:
            raise RuntimeError("DnsServer.start: already running")
        loop = asyncio.get_running_loop()
        if self.tls is not None:
            self._tcp = await loop.create_server(
                lambda: _TcpConnection(self), self.host, self.port, backlog=128, ssl=self.tls
            )
            self._bound_port = self._tcp.sockets[0].getsockname()[1]
            return
        # With port 0 the kernel picks TCP's port, which UDP may already use: pick again.
        attempts = 1 if self.port else _BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            tcp = await loop.create_server(
                lambda: _TcpConnection(self), self.host, self.port, backlog=128
            )
            port = tcp.sockets[0].getsockname()[1]
            try:
                udp_transport, udp = await loop.create_datagram_endpoint(
                    lambda: _UdpEndpoint(self.resolver), local_addr=(self.host, port)
                )
            except OSError as exc:
                tcp.close()
                await tcp.wait_closed()
                if exc.errno == errno.EADDRINUSE and attempt < attempts:
                    continue
                raise
            self._tcp, self._udp, self._bound_port = tcp, udp, port
            self._udp_transport = udp_transport
            return

    async def stop(self) -> None:
        """Close both listeners and every TCP connection; wait until all are closed."""
        if self.tls is not None and self._tcp is not None:
            tcp, self._tcp = self._tcp, None
            tcp.close()
            connections = list(self._connections)
            for connection in connections:
                connection.abort()
            await tcp.wait_closed()
            await asyncio.gather(*(c.closed for c in connections))
            return
        if self._tcp is None or self._udp is None or self._udp_transport is None:
            return
        tcp, udp, self._tcp, self._udp = self._tcp, self._udp, None, None
        tcp.close()
        self._udp_transport.close()
        self._udp_transport = None
        connections = list(self._connections)
        for connection in connections:
            # Not close(): that waits until a client reads every answer, which it may never.
            connection.abort()
        await tcp.wait_closed()
        await asyncio.gather(udp.closed, *(c.closed for c in connections))


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, resolver: LabResolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's and uvloop's transports do not subclass the asyncio ABCs they implement)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.resolver.answer(data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (a client that gave up and closed its socket):
        # nothing a server can do about them.
        log.debug("udp: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _TcpConnection(asyncio.Protocol):
    """One TCP client: messages framed by a 2-byte length (RFC 1035 4.2.2), answered in order
    as they arrive, synchronously (the resolver never waits), so pipelining costs nothing."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._idle: asyncio.TimerHandle | None = None
        self._peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server._connections.add(self)
        self._restart_idle_timer()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self._restart_idle_timer()
        self._buffer += data
        while len(self._buffer) >= 2:
            size = int.from_bytes(self._buffer[:2], "big")
            if size < HEADER_SIZE:
                log.info("tcp %s: %d-byte message is not DNS; closed", self._peer, size)
                self.close()
                return
            if len(self._buffer) < 2 + size:
                return
            query = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            reply = self.server.resolver.answer(query)
            if reply is not None:
                self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def eof_received(self) -> bool:
        if self._buffer:
            log.info("tcp %s: closed in the middle of a message", self._peer)
        return False  # close our side too, after the answers already written

    # A client that sends queries but does not read the answers stops being read.
    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.server._connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def _restart_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.server.idle_timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        log.info("tcp %s: idle for %gs; closed", self._peer, self.server.idle_timeout)
        # Answers the client has not read in all that time are not worth waiting for (this
        # also ends a close() stuck behind them: the timer keeps running until the end).
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.abort()
        else:
            self.close()


# --- DNS over HTTPS ----------------------------------------------------------------------

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def doh_routes(
    resolver: LabResolver, path: str = "/dns-query", *, drop_delay: float = 10.0
) -> list[web.RouteDef]:
    """GET and POST routes for DNS over HTTPS (RFC 8484), for the lab's HTTPS server:
    `app.add_routes(doh_routes(resolver))`. TLS is that server's business.

    Every DNS reply is HTTP 200 (FORMERR and SERVFAIL included, RFC 8484 4.2.1) with
    `Cache-Control: max-age` = the smallest TTL in it (the resolver's TTL when it has no
    records, 0 for replies to malformed queries). A request that is not a DNS query at all
    (bad base64url, fewer than 12 bytes, a response) is 400; a POST that is not
    application/dns-message is 415.

    A 'drop' rule holds the request for `drop_delay` seconds, then answers 504 Gateway
    Timeout: a client with a shorter timeout sees the timeout a dropped UDP query gives, and
    the server never holds a request longer than that (nor delays its own shutdown more).
    """

    async def get(request: web.Request) -> web.Response:
        encoded = request.query.get("dns")
        if encoded is None:
            return _http_error(400, "missing the 'dns' query parameter")
        try:
            query = _base64url_decode(encoded)
        except ValueError:
            return _http_error(400, "the 'dns' parameter is not base64url")
        return await respond(query)

    async def post(request: web.Request) -> web.Response:
        if request.content_type != DNS_MESSAGE:
            return _http_error(415, f"expected Content-Type: {DNS_MESSAGE}")
        if (request.content_length or 0) > MAX_MESSAGE:
            return _http_error(413, f"a DNS message has at most {MAX_MESSAGE} bytes")
        query = await request.read()
        if len(query) > MAX_MESSAGE:
            return _http_error(413, f"a DNS message has at most {MAX_MESSAGE} bytes")
        return await respond(query)

    async def respond(query: bytes) -> web.Response:
        reply = resolver._reply(query, udp=False)
        if reply.dropped:
            await asyncio.sleep(drop_delay)
            return _http_error(504, "the resolver did not answer")
        if reply.wire is None:
            return _http_error(400, "not a DNS query")
        return web.Response(
            body=reply.wire,
            content_type=DNS_MESSAGE,
            headers={"Cache-Control": f"max-age={reply.max_age}"},
        )

    return [web.get(path, get, allow_head=False), web.post(path, post)]


def _base64url_decode(text: str) -> bytes:
    # RFC 8484 4.1: base64url without padding; padding is tolerated.
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # binascii.Error: ValueError


def _http_error(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")
