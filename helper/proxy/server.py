"""The client server: every connection an application or a device makes to detour, whatever
port it came in on, from accept to close.

One `ClientServer` per engine owns what every kind of listener shares, once: admission
(allow-list, connection limits, refusal logs a flood cannot fill), the connection table and
its ids, the router each connection keeps across reloads, the destination policy for
clients not on this machine, connecting through the router (with the TLS ClientHello retry),
the relay and its accounting (events, counters, one log line), and drain, idle, released and
stop. A `Listener` contributes only where it listens and how a connection starts: its
`handshake`, which reads what it needs from the client and returns a `Request`.

    accept --admission--> handshake (within its timeout) --Request--> destination policy
      --> router.connect (or refuse) --> success reply --> ClientHello retry --> relay
      --> counters, event, log line

A Request (listener.py) says where to go and how to answer the client: the target and a
protocol label, the success reply and the failure reply for an exception, bytes to send
upstream first, whether a TLS ClientHello may be retried through the next route, and two
stream hooks: a replacement for the client's stream (a handshake that terminates TLS, or
decrypts what the client sends, hands the server the stream of plaintext) and a wrapper for
the route's stream once it is connected (one that must encrypt toward the destination).

Each connection runs in its own task with its own explicit context, a `ClientConnection`:
the listener, the client's stream, the router it started with (a reload switches new
connections to a new router; this one keeps its own to the end), its row in the table.
(mitmproxy's ConnectionHandler and its proxy modes are the model.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import logging
import time
from typing import TypeVar

from transports.base import IPAddress
from transports.deadlines import Deadlines
from transports.guard import guarded, normalize_address
from transports.tcp import SocketStream, StreamProtocol

from ..events import ConnectionClosed, ConnectionOpened, EventBus
from ..routing import AllRoutesFailed, Connection, Denied, Router
from ..routing.progress import ProgressWatch, record_stall
from ..status import ConnectionView, ListenerView, Tally
from .handshake import ProtocolError
from .listener import ClientConnection, Listener, Request
from .relay import relay
from .retry import CLIENT_HELLO, first_exchange
from .stalls import StallWatches

__all__ = ["ClientServer"]

L = TypeVar("L", bound=Listener)

log = logging.getLogger("detour.proxy")


class _Accepting(StreamProtocol):
    """The protocol of an accepted connection until the relay takes the transport over."""

    __slots__ = ("_listener", "_server")

    def __init__(
        self, server: ClientServer, listener: Listener, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(loop)
        self._server = server
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self._server.accepted(self._listener, SocketStream(self.transport, self))


@functools.lru_cache(maxsize=4096)
def _client_address(host: str) -> tuple[IPAddress | None, str]:
    """A peer's address (an IPv4-mapped one as IPv4) and the key the limits count it by.
    Cached: clients are few and come back often, and parsing costs more than the rest of
    admission."""
    try:
        ip = normalize_address(ipaddress.ip_address(host))
    except ValueError:
        return None, host
    return ip, str(ip)


class ClientServer:
    """Every client connection of every listener (module docstring)."""

    def __init__(
        self,
        router: Router,
        *,
        events: EventBus | None = None,
        tally: Tally | None = None,
        first_answer: float = 0.0,
    ) -> None:
        """`router`: for new connections (a reload sets another). `first_answer`: how long a
        route may take to answer a TLS client's ClientHello before the server sends it
        through the next route (0: never retry)."""
        self.router = router
        self.events = events
        self.tally = tally
        self.first_answer = first_answer
        # A live connection frozen this long counts against its route (routing/progress.py;
        # 0: not watched); `stall_close` also closes it. Set by the engine from [probe].
        self.stall_timeout = 0.0
        self.stall_close = False
        self.listeners: list[Listener] = []
        self.connections: dict[int, ClientConnection] = {}
        self._ids = itertools.count(1)
        self._waiters: list[asyncio.Future[None]] = []
        # The handshakes' and first flights' timeouts, on one timer (deadlines.py).
        self._deadlines = Deadlines()
        # The relaying connections' freeze checks, on one timer (stalls.py).
        self._stalls: StallWatches[tuple[ClientConnection, Connection]] = StallWatches(
            self._stalled
        )

    def add(self, listener: L) -> L:
        """Serve `listener`'s connections (from start() on)."""
        self.listeners.append(listener)
        return listener

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    def listener_views(self) -> list[ListenerView]:
        return [view for listener in self.listeners for view in listener.views()]

    def connection_views(self) -> tuple[ConnectionView, ...]:
        return tuple(self.connections[i].view() for i in sorted(self.connections))

    # --- listening ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the listeners' ports, in the order they were added; on a failure, close those
        opened and raise OSError saying which setting and address."""
        opened: list[Listener] = []
        loop = asyncio.get_running_loop()
        try:
            for listener in self.listeners:
                try:
                    listener.server = await listener.listen(
                        functools.partial(_Accepting, self, listener, loop)
                    )
                except OSError as exc:
                    raise listener.cannot_listen(exc) from None
                opened.append(listener)
        except BaseException:
            for listener in opened:
                await self._close(listener)
            raise

    def stop_accepting(self) -> None:
        """Close the listening sockets; connections already accepted go on."""
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()

    async def stop(self) -> None:
        """Stop accepting and end every connection (cut: the clients see a reset)."""
        self.stop_accepting()
        tasks = [conn.task for conn in self.connections.values() if conn.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for listener in self.listeners:
            await self._close(listener)

    @staticmethod
    async def _close(listener: Listener) -> None:
        if listener.server is not None:
            listener.server.close()
            # Only now: since Python 3.12 this also waits for every connection to close.
            await listener.server.wait_closed()
            listener.server = None

    async def idle(self) -> None:
        """Wait until no connection is open."""
        while self.connections:
            await self._changed()

    async def released(self, router: Router) -> None:
        """Wait until no open connection uses `router`."""
        while any(conn.router is router for conn in self.connections.values()):
            await self._changed()

    async def _changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _ended(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- one connection -------------------------------------------------------------------

    def accepted(self, listener: Listener, stream: SocketStream) -> None:
        """A client connected to `listener`: admit it (or close it at once) and serve it in a
        task of its own."""
        peer = stream.get_extra_info("peername")
        host, port = (peer[0], peer[1]) if peer else ("unknown", 1)
        ip, key = _client_address(host)
        if ip is not None:
            host = key  # an IPv4 client of a dual-stack socket is shown as IPv4
        client = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not listener.admission.admit(client, key, ip):
            stream.abort()
            return
        conn = ClientConnection(
            next(self._ids),
            client,
            listener=listener,
            stream=stream,
            router=self.router,
            key=key,
            local=listener.is_local(ip, key),
        )
        self.connections[conn.id] = conn
        conn.task = self._deadlines.loop.create_task(
            self._serve(conn), name=f"detour-conn-{conn.id}"
        )

    async def _serve(self, conn: ClientConnection) -> None:
        try:
            await self._serve_client(conn)
        except asyncio.CancelledError:
            conn.stream.abort()  # cut short (detour is stopping): a reset, never a clean end
            raise
        except Exception:
            log.exception("connection %d from %s: internal error", conn.id, conn.client)
            conn.stream.abort()
        finally:
            del self.connections[conn.id]
            conn.listener.admission.release(conn.key, handshaking=conn.handshaking)
            if not conn.stream.is_closing():
                conn.stream.close()
            if self._waiters:
                self._ended()

    async def _serve_client(self, conn: ClientConnection) -> None:
        listener = conn.listener
        stream = conn.stream
        timeout = listener.handshake_timeout
        try:
            try:
                if timeout is None:
                    request = await listener.handshake(conn)
                else:
                    with self._deadlines.after(timeout):
                        request = await listener.handshake(conn)
            finally:
                conn.handshaking = False
                listener.admission.handshake_over(conn.key)
        except TimeoutError:
            log.info("client %s: no complete request within %gs; closed", conn.client, timeout)
            reply = listener.timeout_reply(conn)
            if reply and not stream.is_closing():
                stream.write(reply)
            stream.close()
            return
        except ProtocolError as exc:
            if not exc.logged:
                log.info("client %s: %s", conn.client, exc)
            if exc.reply and not stream.is_closing():
                stream.write(exc.reply)
            stream.close()
            return
        except OSError as exc:
            log.debug("client %s: gone during handshake: %s", conn.client, exc)
            stream.abort()
            return
        if request is None:
            stream.close()
            return
        if request.client is not None:
            conn.stream = request.client
        conn.protocol = request.protocol
        conn.target = request.target
        if request.serve is not None:
            await request.serve(conn)
            return
        if listener.policy is None or conn.local:
            await self._connect_and_relay(conn, request)
            return
        refusal = listener.destination_refusal(request.target, conn.router.services)
        if refusal is not None:
            self._refuse(conn, request, Denied(refusal))
            return
        with guarded(request.target.host, listener.policy):
            await self._connect_and_relay(conn, request)

    def _refuse(self, conn: ClientConnection, request: Request, exc: Exception) -> None:
        conn.listener.unreachable(conn, request, exc)
        reply = request.failure(exc)
        stream = conn.stream
        # With no reply to send (a redirected connection), reset: the client learns the
        # connection failed, not that it ended.
        if not reply:
            stream.abort()
            return
        if not stream.is_closing():
            stream.write(reply)
        stream.close()

    async def _connect(self, conn: ClientConnection, request: Request, exclude=()) -> Connection:
        connection = await conn.router.connect(request.target, exclude=exclude)
        if request.upstream is not None:
            try:
                wrapped = await request.upstream(connection.stream)
            except BaseException:
                connection.stream.abort()
                raise
            connection = dataclasses.replace(connection, stream=wrapped)
        return connection

    async def _connect_and_relay(self, conn: ClientConnection, request: Request) -> None:
        try:
            connection = await self._connect(conn, request)
        except (Denied, AllRoutesFailed) as exc:
            self._refuse(conn, request, exc)
            return
        client = conn.stream
        if client.is_closing():
            connection.stream.abort()
            return
        if request.success:
            client.write(request.success)
        watch = None
        if self.stall_timeout > 0:
            watch = ProgressWatch(self.stall_timeout, self._deadlines.loop.time())
        if request.retry_client_hello and not request.first_upstream:
            retried = await first_exchange(
                client,
                connection,
                conn.router,
                request.target,
                self.first_answer,
                conn.stats,
                deadlines=self._deadlines,
                connect=(lambda tried: self._connect(conn, request, tried))
                if request.upstream is not None
                else None,
                flight=request.first_flight or CLIENT_HELLO,
                progress=watch,
            )
            if retried is None:
                client.abort()  # every route failed the client's ClientHello: tell it so
                return
            connection = retried
            if client.is_closing():  # gone while its first bytes were awaited
                connection.stream.abort()
                return
        await self._relay(conn, request, connection, watch)

    async def _relay(
        self,
        conn: ClientConnection,
        request: Request,
        connection: Connection,
        watch: ProgressWatch | None = None,
    ) -> None:
        """Relay until both directions end, with what is told of every connection: the
        counters, the opened and closed events, route success, and one log line."""
        service = connection.service.name if connection.service is not None else None
        route = connection.route.name
        conn.service, conn.route = service, route
        upstream = connection.stream
        loop = self._deadlines.loop
        if request.first_upstream:
            upstream.write(request.first_upstream)
            conn.stats.up += len(request.first_upstream)
            if watch is not None:
                watch.sent(len(request.first_upstream), loop.time())
        tally, events = self.tally, self.events
        if tally is not None:
            tally.connection_opened(service, route)
        if events is not None and events.listening:
            events.publish(ConnectionOpened(conn.id, conn.client, str(conn.target), service, route))
        stats = conn.stats
        pump = relay(
            conn.stream,
            upstream,
            idle_timeout=conn.listener.idle_timeout,
            stats=stats,
            progress=watch,
        )
        if watch is not None:
            self._stalls.add(conn.id, watch, (conn, connection), loop)
        try:
            await pump
        except asyncio.CancelledError:
            # Closed for its stall (_stalled) is an end like another; a cancellation from
            # elsewhere (detour stopping) stays one.
            task = conn.task
            if watch is None or not watch.closed or task is None or task.uncancel() > 0:
                raise
        finally:
            if watch is not None:
                self._stalls.discard(conn.id)
            if stats.down:
                conn.router.record_success(connection.service, connection.route)
            how = "idle timeout" if stats.idle_timed_out else ("reset" if stats.reset else "closed")
            if watch is not None and watch.stalled is not None:
                how = f"{'closed, ' if watch.closed else ''}stalled ({watch.stalled.diagnosis})"
            duration = time.monotonic() - conn.started
            if tally is not None:
                tally.connection_closed(service, route, stats.up, stats.down)
            if events is not None and events.listening:
                events.publish(ConnectionClosed(conn.id, stats.up, stats.down, duration, how))
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "client %s: %s %s via %s: %d bytes up, %d down, %.1fs, %s",
                    conn.client,
                    conn.protocol,
                    conn.target,
                    route,
                    stats.up,
                    stats.down,
                    duration,
                    how,
                    extra={
                        "event": "connection_closed",
                        "client": conn.client,
                        "protocol": conn.protocol,
                        "target": str(conn.target),
                        "service": service,
                        "route": route,
                        "up": stats.up,
                        "down": stats.down,
                        "seconds": round(duration, 3),
                        "end": how,
                    },
                )

    def _stalled(self, item: tuple[ClientConnection, Connection], watch: ProgressWatch) -> None:
        """A relaying connection froze (stalls.py): it counts against its route, and with
        `stall_close` its relay is cut (its task is cancelled, which _relay takes as the
        connection's end)."""
        conn, connection = item
        stall = watch.stalled
        assert stall is not None
        record_stall(
            conn.router, connection.service, connection.route, stall.diagnosis, stall.detail
        )
        task = conn.task
        if self.stall_close and task is not None and not task.done():
            watch.closed = True
            task.cancel()
