"""The lab's UDP services: what a call needs from a messenger's servers, in miniature.

    StunServer   answers RFC 5389 binding requests with the address it saw (XOR-MAPPED-ADDRESS),
                 as the services' STUN endpoints do before a call; anything else is ignored
    UdpEcho      a "call relay": sends every datagram back to whoever sent it, as it came
    UdpCensor    a censor's UDP hop in front of one of them: forwards datagrams both ways,
                 or drops them -- all UDP, or all but what comes from the addresses that stand
                 for "abroad" (where the lab's upstream proxies send from), as networks that
                 drop calls do since 2025

Both are asyncio datagram servers that count what they got, so a test can tell "the datagram
never arrived" (a censor dropped it) from "the answer was lost"; `start_udp` opens one on a
host and port (0: any free port) and returns it running.

    UDP_SCENARIOS  how networks treat UDP, one row each: which of the lab's UDP services
                   (the resolver, STUN, the call relay) pass, and whether what comes from
                   abroad passes where the rest is dropped
    UdpLab         the three services on loopback, each behind a censor set by a scenario
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from transports import Endpoint
from transports.stun import BINDING_REQUEST, binding_response, parse_message
from transports.wire import ProtocolError

__all__ = [
    "ABROAD",
    "UDP_SCENARIOS",
    "StunServer",
    "UdpCensor",
    "UdpEcho",
    "UdpLab",
    "UdpScenario",
    "UdpService",
    "start_censor",
    "start_udp",
]

log = logging.getLogger("detour.lab")


class _Bound(asyncio.DatagramProtocol):
    """A datagram socket of the lab's: its address once started."""

    transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> Endpoint:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return Endpoint(host, port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]


class UdpService(_Bound):
    """A datagram server: its address once started, what it received and answered."""

    def __init__(self) -> None:
        self.transport = None
        self.received = 0
        self.answered = 0
        self.ignored = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.received += 1
        answer = self.answer(data, Endpoint(addr[0], addr[1]))
        if answer is None:
            self.ignored += 1
            return
        assert self.transport is not None
        self.transport.sendto(answer, addr)
        self.answered += 1

    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UdpEcho(UdpService):
    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        return data


class StunServer(UdpService):
    def __init__(self, software: str = "detour lab") -> None:
        super().__init__()
        self.software = software

    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        try:
            message = parse_message(data)
        except ProtocolError:
            return None
        if message.type != BINDING_REQUEST:
            return None
        return binding_response(message.transaction, source, self.software)


async def start_udp(service: UdpService, host: str = "127.0.0.1", port: int = 0) -> UdpService:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: service, local_addr=(host, port))
    return service


class _Upstream(asyncio.DatagramProtocol):
    """The censor's socket toward the service for one client address."""

    def __init__(self, censor: UdpCensor, client: tuple) -> None:
        self.censor = censor
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        if self.censor.transport is not None:
            self.censor.transport.sendto(data, self.client)


class UdpCensor(_Bound):
    """Forwards datagrams to `backend` and its answers back, unless the rule drops them:
    `drop = True` drops every datagram except those from `allowed_sources` (IP addresses as
    text). `passed` and `dropped` count datagrams from clients."""

    def __init__(
        self,
        backend: Endpoint,
        *,
        drop: bool = False,
        allowed_sources: frozenset[str] = frozenset(),
    ) -> None:
        self.backend = backend
        self.drop = drop
        self.allowed_sources = allowed_sources
        self.transport: asyncio.DatagramTransport | None = None
        self.passed = 0
        self.dropped = 0
        self._upstreams: dict[tuple, _Upstream] = {}
        self._pending: dict[tuple, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def datagram_received(self, data: bytes, addr) -> None:
        if self.drop and addr[0] not in self.allowed_sources:
            self.dropped += 1
            return
        self.passed += 1
        upstream = self._upstreams.get(addr)
        if upstream is not None and upstream.transport is not None:
            upstream.transport.sendto(data)
            return
        pending = self._pending.setdefault(addr, [])
        pending.append(data)
        if len(pending) == 1:
            task = asyncio.get_running_loop().create_task(self._open(addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self, addr: tuple) -> None:
        loop = asyncio.get_running_loop()
        upstream = _Upstream(self, addr)
        await loop.create_datagram_endpoint(
            lambda: upstream, remote_addr=(self.backend.host, self.backend.port)
        )
        self._upstreams[addr] = upstream
        assert upstream.transport is not None
        for data in self._pending.pop(addr, []):
            upstream.transport.sendto(data)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for upstream in self._upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        if self.transport is not None:
            self.transport.close()


async def start_censor(censor: UdpCensor, host: str = "127.0.0.1", port: int = 0) -> UdpCensor:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: censor, local_addr=(host, port))
    return censor


# --- scenarios ----------------------------------------------------------------------------

ABROAD = "127.0.0.2"  # where the lab's upstream proxies send from ("abroad")
LAB_UDP_SERVICES = ("resolver", "stun", "relay")


@dataclass(frozen=True)
class UdpScenario:
    """How a network treats UDP: `passes`, the lab's UDP services whose datagrams pass from
    anywhere; `abroad_passes`, whether datagrams from ABROAD (an upstream proxy's relay)
    pass to the others. What passes neither way is dropped, silently."""

    name: str
    summary: str
    passes: frozenset[str]
    abroad_passes: bool


UDP_SCENARIOS: dict[str, UdpScenario] = {}


def _add(scenario: UdpScenario) -> None:
    UDP_SCENARIOS[scenario.name] = scenario


# One call per scenario; new ones go at the end.
_add(
    UdpScenario(
        "udp-services-dropped",
        "UDP to the services' STUN and call relays dropped (Telegram and WhatsApp calls, "
        "Aug 2025); DNS and UDP from abroad pass",
        frozenset({"resolver"}),
        abroad_passes=True,
    )
)
_add(
    UdpScenario(
        "udp-all-dropped",
        "all unknown UDP dropped (mobile networks): only DNS to the network's resolver "
        "passes; STUN, the services' UDP and an upstream proxy's UDP relay are dropped",
        frozenset({"resolver"}),
        abroad_passes=False,
    )
)


class UdpLab:
    """The lab's UDP services on loopback (a DNS resolver that knows `names`, a STUN server,
    a UDP echo "call relay"), each behind a UdpCensor set by `scenario`. `address(name)`
    is where a client sends to reach one (through its censor); `censors[name]` counts what
    passed and what was dropped.

    An upstream proxy's UDP relay cannot be put behind a censor on loopback (it answers with
    its own address), so a network that drops the hop to it is modelled where the datagrams
    arrive: datagrams from ABROAD are dropped at the services (`abroad_passes = False`);
    what a client sees is the same, no answer."""

    def __init__(self, scenario: UdpScenario | str, names: dict[str, list[str]] | None = None):
        self.scenario = UDP_SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        self.names = names or {"lab.test": ["127.77.0.1"]}
        self.services: dict[str, object] = {}
        self.censors: dict[str, UdpCensor] = {}
        self._stack = contextlib.AsyncExitStack()

    def address(self, name: str) -> Endpoint:
        return self.censors[name].address

    async def __aenter__(self) -> UdpLab:
        from .dns import LabResolver
        from .dnsserver import DnsServer

        try:
            resolver = DnsServer(LabResolver(self.names), "127.0.0.1", 0)
            await self._stack.enter_async_context(resolver)
            backends = {"resolver": Endpoint(*resolver.address)}
            self.services["resolver"] = resolver
            for name, service in (("stun", StunServer()), ("relay", UdpEcho())):
                await start_udp(service)
                self._stack.callback(service.close)
                self.services[name] = service
                backends[name] = service.address
            sources = frozenset({ABROAD}) if self.scenario.abroad_passes else frozenset()
            for name in LAB_UDP_SERVICES:
                censor = UdpCensor(
                    backends[name],
                    drop=name not in self.scenario.passes,
                    allowed_sources=sources,
                )
                await start_censor(censor)
                self._stack.callback(censor.close)
                self.censors[name] = censor
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
