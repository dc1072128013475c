"""The relay's side of UDP in the fronted tunnel (transports/fronted/datagrams.py): one
association per stream opened to ASSOCIATE; the relay sends each datagram to its destination
and what comes back to the client, in records on that stream.

The destination policy is the relay's, as for TCP streams (server.py): never loopback,
private, link-local or this machine's addresses (names are resolved by the same policy
resolver), only the configured services unless `destinations.allow = "any"`, and no UDP at
all when destinations are reached through another relay (`[upstream]`: two hops carry TCP
only). An association counts as one of the client's connections
(`limits.connections_per_client`); within it, at most MAX_DESTINATIONS destinations and
MAX_WAITING datagrams waiting for theirs to become reachable; what the tunnel cannot take
toward the client beyond datagrams.py's BACKLOG bytes is dropped. It ends when the client closes the
stream, when the tunnel ends, or after `limits.idle_timeout` without a datagram either way.
What is dropped is counted (`UdpRelayCounters`) and logged at a throttled rate.

`relay.udp = false` turns it off: every association is refused with "UDP is off at this
relay", which the client reports as "the relay carries no UDP". The counters since start
are what the relay reports of its UDP (`summary`): the relay has no status page (it
answers as a website), so they go to its log, every REPORT_INTERVAL while they change
(`report`, none while nothing happens) and once when it stops.

Toward the client, the records of datagrams arriving over consecutive turns of the event
loop go out in one write (datagrams.py's RecordWriter), as the client's do: `writes_down`
counts those writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transports import DialError, Endpoint, Failure, Op
from transports.datagram import DirectDatagrams, DirectSession
from transports.fronted.datagrams import RecordReader, RecordWriter
from transports.fronted.protocol import encode_failure
from transports.wire import ProtocolError

from ..proxy.limits import ThrottledLog

if TYPE_CHECKING:
    from transports.fronted.mux import MuxStream

__all__ = [
    "MAX_DESTINATIONS",
    "MAX_WAITING",
    "REPORT_INTERVAL",
    "RelayDatagrams",
    "UdpRelayCounters",
]

log = logging.getLogger("detour.relay")

MAX_DESTINATIONS = 1024
MAX_WAITING = 256
PREPARE_TIMEOUT = 10.0
REPORT_INTERVAL = 300.0  # seconds between the counters' log lines, while they change


@dataclass
class UdpRelayCounters:
    up: int = 0  # datagrams from clients sent on
    down: int = 0  # datagrams to clients
    refused: int = 0  # destinations the policy refuses
    unreachable: int = 0  # destinations that could not be reached (no address, ...)
    over_limit: int = 0  # too many destinations or waiting datagrams, or the backlog full
    associations: int = 0  # associations accepted since start
    associations_refused: int = 0  # refused: UDP off, two hops, the client's limit
    malformed: int = 0  # associations ended by a record that could not be read
    writes_down: int = 0  # writes of records to clients (one frame each, one or more datagrams)


class RelayDatagrams:
    """Every UDP association of one relay."""

    def __init__(self, server: Any) -> None:
        """`server`: the RelayServer (server.py), whose policy, services, limits and
        resolver apply."""
        self.server = server
        local = server.dialer.local_address
        self.datagrams = DirectDatagrams(
            server.dialer.resolver, local_address=str(local) if local else None
        )
        self.counters = UdpRelayCounters()
        self.associations = 0
        self.throttled = ThrottledLog(log)
        self.report_interval = REPORT_INTERVAL
        self._reported: tuple[int, ...] | None = None  # the counters at the last line
        self._reporter: asyncio.Task[None] | None = None

    def refusal(self, target: Endpoint) -> str | None:
        """Why the policy refuses `target` before any name is resolved (the same rules as
        the relay's TCP streams: RelayServer.destination_refusal), or None."""
        if self.server.upstream is not None:
            return "this relay reaches destinations through another relay: UDP is not carried"
        refused = self.server.destination_refusal(target)
        return refused[0] if refused is not None else None

    @property
    def enabled(self) -> bool:
        """Whether this relay carries UDP at all (`relay.udp`, and not through two hops)."""
        return self.server.config.udp and self.server.upstream is None

    def summary(self) -> str:
        """The UDP counters since start, as a log line says them."""
        if not self.server.config.udp:
            state = "off (relay.udp = false)"
        elif self.server.upstream is not None:
            state = "not carried (two hops)"
        else:
            state = "on"
        c = self.counters
        return (
            f"UDP {state}: {c.associations} associations ({self.associations} open, "
            f"{c.associations_refused} refused), {c.up} datagrams up, {c.down} down "
            f"in {c.writes_down} writes; dropped: "
            f"{c.refused} refused, {c.unreachable} unreachable, {c.over_limit} over_limit; "
            f"{c.malformed} associations ended malformed"
        )

    def report(self) -> bool:
        """Log the counters if they changed since the last line; whether it did."""
        snapshot = (*dataclasses.astuple(self.counters), self.associations)
        if snapshot == self._reported:
            return False
        self._reported = snapshot
        log.info("relay: %s", self.summary())
        return True

    def started(self) -> None:
        """At the relay's start: the counters' log line every `report_interval` while they
        change; when it carries no UDP, one line that says so instead."""
        if not self.enabled:
            log.info("relay: %s", self.summary())
        elif self._reporter is None:
            self._reported = (*dataclasses.astuple(self.counters), self.associations)
            self._reporter = asyncio.ensure_future(self._report_loop())

    async def stopped(self) -> None:
        """At the relay's stop: no more periodic lines; one with the totals."""
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
            self._reporter = None
        log.info("relay: %s", self.summary())

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            self.report()

    def _count_write(self, records: int) -> None:
        self.counters.writes_down += 1

    def _refuse(self, stream: MuxStream, why: str) -> None:
        self.counters.associations_refused += 1
        stream.session.refuse(
            stream, encode_failure(DialError(Failure.PROXY_REFUSED, Op.CONNECT, why))
        )

    async def serve(self, name: str, stream: MuxStream) -> None:
        """An ASSOCIATE stream of client `name`: accepted (within the client's limit), then
        datagrams until it ends."""
        server = self.server
        session = stream.session
        limit = server.config.connections_per_client
        if not server.config.udp:
            self.throttled.log(
                "off", logging.INFO, "relay: %s asked for UDP, which is off (relay.udp)", name
            )
            self._refuse(stream, "UDP is off at this relay (relay.udp = false)")
            return
        if server.upstream is not None:
            self._refuse(
                stream,
                "this relay reaches destinations through another relay: UDP is not carried",
            )
            return
        if server.streams_of[name] >= limit:
            self.throttled.log(
                "limit", logging.INFO, "relay: %s is at its limit of %d connections", name, limit
            )
            self._refuse(stream, f"this access key has {limit} connections open, the relay's limit")
            return
        server.streams_of[name] += 1
        self.associations += 1
        self.counters.associations += 1
        association = _Association(self, name, stream)
        try:
            session.accept(stream)
            await association.run()
        finally:
            association.close()
            self.associations -= 1
            server.streams_of[name] -= 1


class _Association:
    def __init__(self, owner: RelayDatagrams, name: str, stream: MuxStream) -> None:
        self.owner = owner
        self.name = name
        self.stream = stream
        self.writer = RecordWriter(stream, on_write=owner._count_write)
        self.flows: DirectSession = owner.datagrams.open(self._from_destination)
        self.waiting: dict[Endpoint, deque[bytes]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused: set[Endpoint] = set()
        self.used = time.monotonic()
        self.counts: Counter[str] = Counter()

    async def run(self) -> None:
        reader = RecordReader()
        idle = self.owner.server.config.idle_timeout
        stream = self.stream
        started = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await stream.read(65536)
            except TimeoutError:
                if time.monotonic() - self.used < idle:
                    continue  # datagrams came back meanwhile: not idle
                break
            except OSError:
                break
            if not chunk:
                break
            try:
                datagrams = reader.feed(chunk)
            except ProtocolError as exc:
                self.owner.throttled.log(
                    "malformed", logging.WARNING, "relay: %s: UDP: %s; association ended",
                    self.name, exc,
                )  # fmt: skip
                self.owner.counters.malformed += 1
                stream.abort()
                break
            for target, payload in datagrams:
                self.up(target, payload)
        dropped = "".join(
            f", {n} {kind}" for kind, n in sorted(self.counts.items()) if kind not in ("up", "down")
        )
        log.info(
            "relay: %s: UDP association: %d datagrams up, %d down, %.1fs%s",
            self.name, self.counts["up"], self.counts["down"], time.monotonic() - started, dropped,
        )  # fmt: skip

    def up(self, target: Endpoint, payload: bytes) -> None:
        self.used = time.monotonic()
        counters = self.owner.counters
        if self.flows.ready(target):
            self.flows.send(payload, target)
            self.counts["up"] += 1
            counters.up += 1
            return
        queue = self.waiting.get(target)
        if queue is not None:
            if sum(len(q) for q in self.waiting.values()) >= MAX_WAITING:
                self._drop("over_limit", f"more than {MAX_WAITING} datagrams waiting")
                return
            queue.append(payload)
            return
        if target in self.refused:
            self._drop("refused", f"{target} is refused")
            return
        why = self.owner.refusal(target)
        if why is not None:
            self.refused.add(target)
            self._drop("refused", why)
            return
        if self.flows.flows + len(self.waiting) >= MAX_DESTINATIONS:
            self._drop("over_limit", f"more than {MAX_DESTINATIONS} destinations")
            return
        self.waiting[target] = deque([payload])
        task = asyncio.get_running_loop().create_task(
            self._prepare(target), name="detour-relay-udp-prepare"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _prepare(self, target: Endpoint) -> None:
        try:
            async with asyncio.timeout(PREPARE_TIMEOUT):
                await self.flows.prepare(target)
        except (DialError, TimeoutError) as exc:
            dropped = self.waiting.pop(target, deque())
            refused = isinstance(exc, DialError) and exc.failure is Failure.PROXY_REFUSED
            if refused:
                self.refused.add(target)
            self.counts["refused" if refused else "unreachable"] += len(dropped)
            if refused:
                self.owner.counters.refused += len(dropped)
            else:
                self.owner.counters.unreachable += len(dropped)
            why = (
                exc.detail
                if isinstance(exc, DialError)
                else f"not reachable in {PREPARE_TIMEOUT:g}s"
            )
            self.owner.throttled.log(
                "unreachable", logging.INFO, "relay: %s: UDP to %s: %s", self.name, target, why
            )
            return
        queue = self.waiting.pop(target, deque())
        for payload in queue:
            self.flows.send(payload, target)
        self.counts["up"] += len(queue)
        self.owner.counters.up += len(queue)

    def _from_destination(self, payload: bytes, source: Endpoint) -> None:
        self.used = time.monotonic()
        if not self.writer.write(source, payload):
            self.counts["over_limit"] += 1
            self.owner.counters.over_limit += 1
            return
        self.counts["down"] += 1
        self.owner.counters.down += 1

    def _drop(self, kind: str, why: str) -> None:
        self.counts[kind] += 1
        setattr(self.owner.counters, kind, getattr(self.owner.counters, kind) + 1)
        self.owner.throttled.log(kind, logging.INFO, "relay: %s: UDP dropped: %s", self.name, why)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.writer.cancel()
        self.flows.close()
        with contextlib.suppress(Exception):
            self.stream.close()
