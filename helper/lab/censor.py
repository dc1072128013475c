"""The censor: a middlebox between lab clients and the lab's servers.

Every address:port a client can dial in the lab is a censor listener. For each flow the
censor applies its Policy -- rules matching the destination address and port, the TLS server
name or the HTTP Host (as far as its DPI reassembly reaches) -- and then resets, closes,
drops, refuses, throttles, freezes, answers with a block page, or forwards the flow to the
server behind it. One DPI engine, many recipes (OONI netem's model); a Policy is replaced
while the lab runs and applies to new flows.

Userland approximations (docs/lab.md): a refusal closes the listener, so connection attempts
are refused by the kernel, but an address-level black-hole or reset can only act after the
TCP handshake (the client sees a timeout or reset during its first exchange, not at connect);
the lab's --netns mode does those two in the kernel.

Flows from the lab's own servers that stand outside the censored network (the upstream
proxies, the CDN front) pass untouched: they dial from addresses listed as `outside`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from transports.base import IPNetwork

from .dpi import Depth, Seen, inspect

__all__ = ["ACTIONS", "AllowList", "Censor", "FlowEvent", "Policy", "Rule", "Verdict"]

log = logging.getLogger("detour.lab.censor")


ACTIONS = ("pass", "reset", "close", "drop", "refuse", "throttle", "freeze", "blockpage")
MATCH_MODES = ("exact", "suffix", "substring")

FIRST_DATA_WAIT = 1.0  # how long the DPI waits for a client's first bytes before deciding
HOLD = 300.0  # how long a dropped or frozen flow is held open (the client gives up first)
CHUNK = 16 * 1024

BLOCK_PAGE = (
    b"<html><head><title>Access restricted</title></head><body>"
    b"<h1>Access to this resource is restricted</h1>"
    b"<p>detour lab block page (a mock of a censor's page).</p></body></html>\n"
)


def _name_matches(pattern: str, name: str, mode: str) -> bool:
    if mode == "exact":
        return name == pattern
    if mode == "suffix":
        return name == pattern or name.endswith("." + pattern)
    return pattern in name


@dataclass(frozen=True)
class Rule:
    """One censorship rule: what it matches and what it does. Every given condition must
    hold; a rule with none matches every flow."""

    action: str
    name: str = ""
    cidrs: tuple[IPNetwork, ...] = ()
    ports: frozenset[int] = frozenset()
    sni: str | None = None
    host: str | None = None
    match: str = "suffix"  # how `sni` and `host` compare: exact, suffix or substring
    rate: int | None = None  # throttle: bytes per second, each way
    after: int | None = None  # freeze: bytes from the server before the flow freezes
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r} (known: {', '.join(ACTIONS)})")
        if self.match not in MATCH_MODES:
            raise ValueError(f"unknown match {self.match!r} (known: {', '.join(MATCH_MODES)})")
        if self.action == "throttle" and not (self.rate and self.rate > 0):
            raise ValueError("a throttle rule needs rate (bytes per second, more than 0)")
        if self.action == "freeze" and not (self.after and self.after > 0):
            raise ValueError("a freeze rule needs after (bytes, more than 0)")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("probability must be more than 0 and at most 1")
        if self.action == "refuse" and (self.content_based or self.probability < 1.0):
            raise ValueError(
                "refuse acts on connection attempts: it can match only cidrs and ports, "
                "with probability 1"
            )

    @property
    def content_based(self) -> bool:
        return self.sni is not None or self.host is not None

    def matches_address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        if self.ports and port not in self.ports:
            return False
        return not self.cidrs or any(ip in net for net in self.cidrs if net.version == ip.version)

    def matches_content(self, seen: Seen) -> bool:
        if self.sni is not None and not (
            seen.sni and _name_matches(self.sni, seen.sni, self.match)
        ):
            return False
        return self.host is None or bool(
            seen.host and _name_matches(self.host, seen.host, self.match)
        )


@dataclass(frozen=True)
class AllowList:
    """Allow-list mode: only these destinations pass (by address, or by TLS server name or
    HTTP Host, suffix match); everything else is dropped after its first bytes."""

    cidrs: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, seen: Seen) -> bool:
        if any(ip in net for net in self.cidrs if net.version == ip.version):
            return True
        name = seen.sni or seen.host
        return bool(name) and any(_name_matches(n, name, "suffix") for n in self.names)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    depth: Depth = Depth.FULL
    allow: AllowList | None = None
    residual_ban: float = 0.0  # after a rule blocks a flow, drop all flows to that IP this long
    name: str = "none"


@dataclass(frozen=True)
class Verdict:
    action: str
    rule: str = ""
    rate: int | None = None
    after: int | None = None

    def __str__(self) -> str:
        return f"{self.action} ({self.rule})" if self.rule else self.action


PASS = Verdict("pass")
_BLOCKING = ("reset", "close", "drop", "blockpage")


@dataclass
class FlowEvent:
    """One flow as the censor saw it, for tests and the lab's log."""

    client: str
    address: str
    port: int
    seen: Seen
    verdict: Verdict
    at: float = field(default_factory=time.monotonic)  # when the censor decided
    accepted: float = 0.0  # when the flow reached the censor (time.monotonic())


def needs_content(
    policy: Policy, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> bool:
    return policy.allow is not None or any(
        r.content_based and r.matches_address(ip, port) for r in policy.rules
    )


def decide(
    policy: Policy,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    seen: Seen,
    chance: Callable[[], float] = random.random,
) -> Verdict:
    """The verdict for a flow: the allow-list first, then the first matching rule."""
    if policy.allow is not None and not policy.allow.allows(ip, seen):
        return Verdict("drop", "allow-list")
    for rule in policy.rules:
        if not rule.matches_address(ip, port) or not rule.matches_content(seen):
            continue
        if rule.action == "refuse":
            continue  # handled by closing the listener; a flow that got in is not refused
        if rule.probability < 1.0 and chance() >= rule.probability:
            return PASS  # enforcement is probabilistic: this flow got lucky
        return Verdict(rule.action, rule.name or rule.action, rule.rate, rule.after)
    return PASS


def _reset(writer: asyncio.StreamWriter) -> None:
    if writer.transport.is_closing():
        writer.transport.abort()
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # (uvloop raises ValueError for a socket closed underneath it)
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Censor:
    """Listeners for every lab endpoint, each forwarding to its backend under the Policy."""

    def __init__(
        self,
        backends: Mapping[tuple[str, int], tuple[str, int]],
        policy: Policy | None = None,
        *,
        outside: Collection[str] = (),
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.backends = dict(backends)
        self.policy = policy or Policy()
        self.outside = frozenset(outside)
        self.events: list[FlowEvent] = []
        self._chance = chance
        self._servers: dict[tuple[str, int], asyncio.Server] = {}
        self._flows: set[asyncio.Task[None]] = set()
        self._bans: dict[str, float] = {}
        self._reconcile_lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._reconcile()

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._flows):
            task.cancel()
        await asyncio.gather(*self._flows, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    async def set_policy(self, policy: Policy) -> None:
        """Apply a new policy to new flows (flows in progress keep their verdict)."""
        self.policy = policy
        self._bans.clear()
        log.info("censor: policy %s", policy.name)
        await self._reconcile()

    def _refused(self, address: str, port: int) -> bool:
        ip = ipaddress.ip_address(address)
        return any(r.action == "refuse" and r.matches_address(ip, port) for r in self.policy.rules)

    async def _reconcile(self) -> None:
        """Listen on every endpoint except those a refuse rule covers."""
        async with self._reconcile_lock:
            for address, port in self.backends:
                key = (address, port)
                refused = self._refused(address, port)
                if refused and key in self._servers:
                    server = self._servers.pop(key)
                    server.close()
                    await server.wait_closed()
                elif not refused and key not in self._servers:
                    self._servers[key] = await asyncio.start_server(
                        lambda r, w, a=address, p=port: self._accept(r, w, a, p),
                        address,
                        port,
                        reuse_address=True,
                    )

    # --- flows ----------------------------------------------------------------------------

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, port: int
    ) -> None:
        task = asyncio.ensure_future(self._flow(reader, writer, address, port))
        self._flows.add(task)
        task.add_done_callback(self._flow_done)

    def _flow_done(self, task: asyncio.Task[None]) -> None:
        self._flows.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("censor: flow failed", exc_info=exc)

    async def _flow(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, port: int
    ) -> None:
        accepted = time.monotonic()
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else "?"
        policy = self.policy
        ip = ipaddress.ip_address(address)
        first = b""
        seen = Seen("other")
        try:
            if peer and peer[0] in self.outside:
                verdict = Verdict("pass", "outside")
            elif self._bans.get(address, 0.0) > time.monotonic():
                verdict = Verdict("drop", "residual ban")
            else:
                if needs_content(policy, ip, port):
                    first, seen = await self._first_bytes(reader, policy.depth)
                verdict = decide(policy, ip, port, seen, self._chance)
                if verdict.action in _BLOCKING and policy.residual_ban > 0:
                    self._bans[address] = time.monotonic() + policy.residual_ban
            self.events.append(FlowEvent(client, address, port, seen, verdict, accepted=accepted))
            log.info(
                "censor: %s -> %s:%d%s: %s",
                client,
                address,
                port,
                f" sni={seen.sni}" if seen.sni else (f" host={seen.host}" if seen.host else ""),
                verdict,
            )
            await self._act(verdict, seen, reader, writer, address, port, first)
        except (ConnectionError, asyncio.IncompleteReadError):
            _reset(writer)
        finally:
            if not writer.is_closing():
                writer.close()

    async def _first_bytes(self, reader: asyncio.StreamReader, depth: Depth) -> tuple[bytes, Seen]:
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_DATA_WAIT
        while True:
            timeout = deadline - loop.time()
            chunk = b""
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    chunk = await asyncio.wait_for(reader.read(CHUNK), timeout)
            data += chunk
            final = not chunk
            seen = inspect(data, depth, final=final)
            if seen is not None:
                return data, seen

    async def _act(
        self,
        verdict: Verdict,
        seen: Seen,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        port: int,
        first: bytes,
    ) -> None:
        action = verdict.action
        if action == "blockpage" and seen.protocol == "http":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(BLOCK_PAGE)}\r\n\r\n".encode()
                + BLOCK_PAGE
            )
            await writer.drain()
            writer.close()
        elif action in ("reset", "blockpage"):  # a TLS flow gets no page: reset it
            _reset(writer)
        elif action == "close":
            writer.close()
        elif action == "drop":
            await _hold(reader)
            writer.close()
        else:
            await self._forward(verdict, reader, writer, self.backends[(address, port)], first)

    async def _forward(
        self,
        verdict: Verdict,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        backend: tuple[str, int],
        first: bytes,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*backend)
        except OSError:
            _reset(writer)  # the server behind is down: what a client would see of that
            return
        frozen = asyncio.Event()
        budget = [verdict.after] if verdict.action == "freeze" else None
        if first:
            up_writer.write(first)
        up = asyncio.ensure_future(_pump(reader, up_writer, verdict.rate, None, frozen))
        down = asyncio.ensure_future(_pump(up_reader, writer, verdict.rate, budget, frozen))
        try:
            pending = {up, down}
            while pending and not frozen.is_set():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() for t in done):
                    _reset(writer)
                    _reset(up_writer)
                    return
            if frozen.is_set():
                # The flow stops dead: nothing more either way, no reset, no close.
                up.cancel()
                await asyncio.gather(up, return_exceptions=True)
                up_writer.close()
                await _hold(reader)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            if not up_writer.is_closing():
                up_writer.close()


async def _pump(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    rate: int | None,
    budget: list[int] | None,
    frozen: asyncio.Event,
) -> None:
    """Copy one direction, at most `rate` bytes per second, and (with a budget) freeze once
    the budget is spent. Passes the end of stream on."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    size = CHUNK if rate is None else max(1, min(CHUNK, rate // 20))
    while not frozen.is_set():
        data = await src.read(size)
        if not data:
            if dst.can_write_eof():
                dst.write_eof()
            return
        if budget is not None:
            data = data[: budget[0]]
            budget[0] -= len(data)
        dst.write(data)
        await dst.drain()
        sent += len(data)
        if budget is not None and budget[0] <= 0:
            frozen.set()
            return
        if rate is not None:
            ahead = started + sent / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _hold(reader: asyncio.StreamReader) -> None:
    """Stay silent: read and discard until the client gives up (or HOLD passes)."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(HOLD):
            while await reader.read(CHUNK):
                pass
