"""SOCKS5 UDP ASSOCIATE (RFC 1928 §7) on the mixed listener: one UDP relay socket per
association, alive as long as the client's TCP control connection.

    client --TCP: greeting, login, UDP ASSOCIATE--> mixed listener (mixed.py, socks.py)
           <--reply: BND = this association's relay socket-----
    client --UDP: RSV FRAG ATYP DST DATA--> relay socket --> route's DatagramSession
           <--UDP: RSV FRAG ATYP SRC DATA-- relay socket <-- (transports/datagram.py)
    control connection closes --> relay socket and every flow close

The relay socket takes datagrams only from the client's address (and, once the first one
came, only from that port, unless the client named its port in the request). What it
drops, it counts (`UdpCounters`, per association and for the listener) and logs through the
listener's throttled log, so a flood can fill neither memory nor the log:

    malformed   a header that cannot be read (transports/udp.py), or port 0
    fragment    FRAG != 0: detour does not reassemble (RFC 1928 allows dropping them)
    foreign     from an address that has no association on this socket
    refused     a destination a LAN client may not reach, or the router denies
    over_limit  more datagrams waiting for their route than the association's or the
                listener's limit (`UdpLimits`), or more destinations than an association's
    no_route    no route carries UDP to the destination (each says why), or all failed

Datagrams "in flight" are those waiting for their destination to become reachable (a name
to resolve, an upstream's UDP ASSOCIATE); once a destination is reachable, datagrams go
through at once and wait nowhere in detour.

Which route: the router's plan for the destination (its service's routes, by health),
reordered by UDP health (routes whose UDP probe worked first, those seen dropping it last:
helper/routing/udp_health.py); routes that carry no UDP (datagram.datagram_dialer says why)
are skipped; the first whose session reaches the destination carries all of that
destination's datagrams in this association.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from transports import DialError, Endpoint
from transports.datagram import DatagramSession, NoDatagrams, datagram_dialer
from transports.guard import guarded
from transports.socks import REP_GENERAL_FAILURE, REP_NOT_ALLOWED, REP_SUCCEEDED
from transports.udp import encode_datagram, parse_datagram
from transports.wire import ProtocolError

from ..routing import Denied
from . import socks as socks_proto
from .udp_budget import DROPS, UdpBudget, UdpCounters, UdpLimits

if TYPE_CHECKING:
    from .listener import ClientConnection, Listener

__all__ = ["DROPS", "UdpAssociation", "UdpBudget", "UdpCounters", "UdpLimits"]

log = logging.getLogger("detour.udp")

PREPARE_TIMEOUT = 10.0  # how long a destination may take to become reachable through a route


class _RelayProtocol(asyncio.DatagramProtocol):
    def __init__(self, association: UdpAssociation) -> None:
        self.association = association
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        self.association.from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP relay socket: %s", exc)


class _Destination:
    """Where one destination's datagrams go: its session once known, and what waits."""

    __slots__ = ("pending", "session", "task")

    def __init__(self) -> None:
        self.session: DatagramSession | None = None
        self.pending: deque[bytes] = deque()
        self.task: asyncio.Task[None] | None = None


class UdpAssociation:
    """One UDP ASSOCIATE, from the reply to the control connection's end (module docstring)."""

    def __init__(
        self,
        conn: ClientConnection,
        listener: Listener,
        budget: UdpBudget,
        client_port: int,
    ) -> None:
        self.conn = conn
        self.listener = listener
        self.budget = budget
        self.counters = UdpCounters()
        host = conn.key  # the client's address, as admission counts it (IPv4-mapped as v4)
        self._client_host = host
        self._client_port = client_port or None  # None: pinned by the first datagram
        self._client_addr: tuple | None = None
        self._destinations: dict[Endpoint, _Destination] = {}
        self._sessions: dict[str, DatagramSession] = {}
        self._no_udp: dict[str, str] = {}  # route -> why it carries no UDP
        self._in_flight = 0
        self._relay: _RelayProtocol | None = None
        self.closed = False
        self.used = time.monotonic()  # the last datagram either way (limits.idle)

    # --- life -----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Open the relay socket, answer the client, and live until the control connection
        ends."""
        conn = self.conn
        stream = conn.stream
        assert stream is not None
        local = stream.get_extra_info("sockname")
        host = local[0] if local else "127.0.0.1"
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]  # an IPv4 client of a dual-stack listener: answer in IPv4
        per_client = self.budget.limits.per_client
        if per_client and self.budget.open_from(conn.key) >= per_client:
            self.budget.refused += 1
            self.listener.admission.throttled.log(
                "udp-per-client", logging.WARNING,
                "client %s: UDP ASSOCIATE refused: %d associations from %s open already "
                "(listen.udp_associations_per_client)", conn.client, per_client, conn.key,
            )  # fmt: skip
            stream.write(socks_proto.socks5_reply(REP_NOT_ALLOWED))
            return
        # Counted from here, before the socket is open: requests at once cannot all pass.
        self.budget.associations.add(self)
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _RelayProtocol(self), local_addr=(host, 0)
            )
        except OSError as exc:
            self.budget.associations.discard(self)
            log.warning(
                "client %s: cannot open a UDP relay socket on %s: %s", conn.client, host, exc
            )
            stream.write(socks_proto.socks5_reply(REP_GENERAL_FAILURE))
            return
        except BaseException:
            self.budget.associations.discard(self)
            raise
        self._relay = protocol
        bound = transport.get_extra_info("sockname")
        self.budget.opened += 1
        self.used = time.monotonic()
        try:
            stream.write(socks_proto.socks5_reply(REP_SUCCEEDED, Endpoint(bound[0], bound[1])))
            log.debug("client %s: UDP association on %s port %d", conn.client, bound[0], bound[1])
            # RFC 1928 §7: the association ends when the TCP connection it came on does, or
            # here when it went silent for limits.idle (its TCP connection is closed then).
            with contextlib.suppress(OSError, ConnectionError):
                await self._hold(stream)
        finally:
            self.close()
            transport.close()
            self.budget.associations.discard(self)
            self.budget.ended.add(self.counters)
            self._log_end()

    async def _hold(self, stream) -> None:
        """Read the control connection until it ends or the association is idle too long."""
        while True:
            idle = self.budget.limits.idle
            if not idle:
                if not await stream.read(4096):
                    return
                continue
            remaining = self.used + idle - time.monotonic()
            if remaining <= 0:
                self.budget.idle_ended += 1
                log.info(
                    "client %s: UDP association ended: no datagram for %gs "
                    "(listen.udp_idle_timeout)", self.conn.client, idle,
                )  # fmt: skip
                return
            try:
                async with asyncio.timeout(remaining):
                    data = await stream.read(4096)
            except TimeoutError:
                continue
            if not data:
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for destination in self._destinations.values():
            if destination.task is not None:
                destination.task.cancel()
            self._forget_pending(destination)
        self._destinations.clear()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def _log_end(self) -> None:
        c = self.counters
        dropped = {k: getattr(c, k) for k in DROPS if getattr(c, k)}
        log.info(
            "client %s: UDP association ended: %d datagrams up, %d down%s",
            self.conn.client,
            c.up,
            c.down,
            "; dropped " + ", ".join(f"{v} {k}" for k, v in dropped.items()) if dropped else "",
            extra={"event": "udp_association_closed", "client": self.conn.client, **c.as_dict()},
        )

    # --- client -> destination ------------------------------------------------------------

    def _drop(self, kind: str, message: str, *args: object) -> None:
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        self.listener.admission.throttled.log(
            f"udp-{kind}", logging.INFO, "client %s: UDP datagram dropped: " + message,
            self.conn.client, *args,
        )  # fmt: skip

    def from_client(self, data: bytes, addr: tuple) -> None:
        if self.closed:
            return
        host, port = addr[0], addr[1]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        if host != self._client_host or (
            self._client_port is not None and port != self._client_port
        ):
            self._drop("foreign", "from %s port %d, which has no association here", host, port)
            return
        if self._client_port is None:
            self._client_port = port
        self._client_addr = addr
        self.used = time.monotonic()
        try:
            datagram = parse_datagram(data)
        except ProtocolError as exc:
            self._drop("malformed", "%s", exc)
            return
        if datagram.frag:
            self._drop("fragment", "fragment %d (fragments are not reassembled)", datagram.frag)
            return
        target = datagram.address
        if target.port == 0:
            self._drop("malformed", "destination port 0")
            return
        self.forward(datagram.payload, target)

    def forward(self, payload: bytes, target: Endpoint) -> None:
        """Send a client's datagram to `target`: at once when its route is known, else once
        it is (within the limits on datagrams in flight)."""
        destination = self._destinations.get(target)
        if destination is not None and destination.session is not None:
            if destination.session.ready(target):
                self._send(destination.session, payload, target)
                return
            destination.session = None  # its flow ended (idle, the upstream closed it)
        if destination is None:
            refusal = self._refusal(target)
            if refusal is not None:
                self._drop("refused", "%s", refusal)
                return
            limit = self.budget.limits.destinations
            if limit and len(self._destinations) >= limit:
                self._drop("over_limit", "more than %d destinations in one association", limit)
                return
            destination = self._destinations[target] = _Destination()
        limits = self.budget.limits
        if (limits.in_flight and self._in_flight >= limits.in_flight) or (
            limits.in_flight_total and self.budget.in_flight >= limits.in_flight_total
        ):
            self._drop("over_limit", "too many datagrams waiting for their route")
            return
        destination.pending.append(payload)
        self._in_flight += 1
        self.budget.in_flight += 1
        if destination.task is None:
            destination.task = asyncio.get_running_loop().create_task(
                self._reach(target, destination), name=f"detour-udp-{self.conn.id}"
            )

    def _refusal(self, target: Endpoint) -> str | None:
        listener = self.listener
        if listener.policy is None or self.conn.local:
            return None
        return listener.destination_refusal(target, self.conn.router.services)

    def _send(self, session: DatagramSession, payload: bytes, target: Endpoint) -> None:
        try:
            session.send(payload, target)
        except OSError as exc:  # (a socket error is the datagram's loss, as on the way)
            log.debug("client %s: UDP to %s: %s", self.conn.client, target, exc)
            return
        self.counters.up += 1
        self.counters.bytes_up += len(payload)
        self.conn.stats.up += len(payload)

    def _forget_pending(self, destination: _Destination) -> int:
        count = len(destination.pending)
        destination.pending.clear()
        self._in_flight -= count
        self.budget.in_flight -= count
        return count

    async def _reach(self, target: Endpoint, destination: _Destination) -> None:
        try:
            session = await self._session_for(target)
        except asyncio.CancelledError:
            raise
        except (Denied, NoDatagrams, DialError) as exc:
            count = self._forget_pending(destination)
            self.counters.no_route += count
            kind = "refused" if isinstance(exc, Denied) else "no_route"
            if kind == "refused":
                self.counters.no_route -= count
                self.counters.refused += count
            self.listener.admission.throttled.log(
                f"udp-{kind}", logging.INFO,
                "client %s: UDP to %s: %d datagram(s) dropped: %s",
                self.conn.client, target, count, exc,
            )  # fmt: skip
            self._destinations.pop(target, None)
            return
        finally:
            destination.task = None
        destination.session = session
        pending = list(destination.pending)
        self._forget_pending(destination)
        for payload in pending:
            self._send(session, payload, target)

    async def _session_for(self, target: Endpoint) -> DatagramSession:
        router = self.conn.router
        assert router is not None
        service, routes = router.plan(target)
        # UDP's own health first: a route whose TCP works may drop UDP (udp_health.py).
        routes = router.udp_health.order(service.name if service else None, routes)
        reasons: list[str] = []
        for route in routes:
            if route.name in self._no_udp:
                reasons.append(self._no_udp[route.name])
                continue
            session = self._sessions.get(route.name)
            if session is None:
                try:
                    dialer = datagram_dialer(
                        route.name, route.chain, route.dialer, off=not route.udp
                    )
                except NoDatagrams as exc:
                    self._no_udp[route.name] = str(exc)
                    reasons.append(str(exc))
                    continue
                session = self._sessions[route.name] = dialer.open(self._make_receive())
            try:
                async with asyncio.timeout(route.timeout or PREPARE_TIMEOUT):
                    if self.listener.policy is not None and not self.conn.local:
                        with guarded(target.host, self.listener.policy):
                            await session.prepare(target)
                    else:
                        await session.prepare(target)
            except TimeoutError:
                reasons.append(f"route {route.name!r}: no way to {target} within the timeout")
                continue
            except DialError as exc:
                reasons.append(f"route {route.name!r}: {exc}")
                continue
            except OSError as exc:
                reasons.append(f"route {route.name!r}: {exc}")
                continue
            if self.conn.route is None:
                self.conn.route = route.name
                self.conn.service = service.name if service is not None else None
            return session
        raise NoDatagrams("; ".join(reasons) or f"no route for {target}")

    # --- destination -> client ------------------------------------------------------------

    def _make_receive(self):
        def receive(payload: bytes, source: Endpoint) -> None:
            if self.closed:
                return
            try:
                if not self.deliver(payload, source):
                    return
            except (OSError, ValueError) as exc:
                log.debug("client %s: UDP back from %s: %s", self.conn.client, source, exc)
                return
            self.used = time.monotonic()
            self.counters.down += 1
            self.counters.bytes_down += len(payload)
            self.conn.stats.down += len(payload)

        return receive

    def deliver(self, payload: bytes, source: Endpoint) -> bool:
        """Send a datagram from `source` to the client: with the SOCKS5 UDP header, from the
        relay socket. False when there is nowhere to send it yet."""
        relay = self._relay
        addr = self._client_addr
        if relay is None or relay.transport is None or addr is None:
            return False
        relay.transport.sendto(encode_datagram(source, payload), addr)
        return True
