"""Datagrams through a route: the UDP counterpart of a Dialer, for the kinds of route that can
carry UDP at all.

A `DatagramDialer` opens a `DatagramSession` for one client association; the session sends a
client's datagrams toward any number of destinations and calls `receive(payload, source)`
for each datagram that comes back. Sending is in two steps, because reaching a destination
may take a moment once (resolving its name, an upstream's UDP ASSOCIATE) and nothing at all
after that:

    session.ready(target)          True once datagrams to `target` can go at once
    await session.prepare(target)  get there (DialError when it cannot)
    session.send(payload, target)  only when ready: never blocks, never waits

Route kinds:

    direct, resolve:    a connected UDP socket per destination (resolved by the route's
                        resolver), closed after `idle` seconds without traffic
    socks5:// (first)   one UDP ASSOCIATE through the upstream per session; datagrams carry
                        the SOCKS5 UDP header (transports/udp.py) to the upstream's relay
    front: (last)       one stream per session in the fronted tunnel, datagrams in records
                        (fronted/datagrams.py); the relay sends them on
    ss://, ssconf://    Shadowsocks UDP packets to the server's port (shadowsocks/udp.py)
      (only layer)
    vless, vmess,       UDP ASSOCIATE through the proxy core's SOCKS5 inbound; the core
    trojan (last)       carries the datagrams inside the link's protocol (core/datagrams.py)

Every other kind carries TCP only, and `datagram_dialer` says so naming the route and the
layer (NoDatagrams): an HTTP CONNECT proxy, SOCKS4a, tgws, the TCP shaping tricks (tlsfrag,
split, desync) and pluggable transports. `udp_refusal` says the same from a parsed chain
alone (config check, the status).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .base import DialError, Endpoint, Failure, Op, classify_os_error
from .guard import check_addresses
from .resolver import Resolver, SystemResolver
from .socks import Socks5Dialer
from .udp import encode_datagram, parse_datagram
from .wire import ProtocolError

__all__ = [
    "DatagramDialer",
    "DatagramSession",
    "DirectDatagrams",
    "NoDatagrams",
    "Receive",
    "Socks5Datagrams",
    "datagram_dialer",
    "udp_refusal",
]

log = logging.getLogger("detour.udp")

Receive = Callable[[bytes, Endpoint], None]

FLOW_IDLE = 120.0  # a direct flow (one destination's socket) closes after this long unused


class NoDatagrams(Exception):
    """A route that carries no UDP; the message names the route and why."""


class DatagramSession(Protocol):
    def ready(self, target: Endpoint) -> bool: ...
    async def prepare(self, target: Endpoint) -> None: ...
    def send(self, payload: bytes, target: Endpoint) -> None: ...
    def close(self) -> None: ...


class DatagramDialer(Protocol):
    def open(self, receive: Receive) -> DatagramSession: ...


class _Flow(asyncio.DatagramProtocol):
    """One connected UDP socket: to one destination, or to an upstream's relay."""

    def __init__(self, on_datagram: Callable[[bytes], None], on_lost: Callable[[], None]):
        self.transport: asyncio.DatagramTransport | None = None
        self.on_datagram = on_datagram
        self.on_lost = on_lost
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        self.used = time.monotonic()
        self.on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP has no connection to fail; the datagram is
        # lost, as it would be on the way.
        log.debug("udp flow: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


async def _connected_socket(address: str, port: int, flow: _Flow, local: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.create_datagram_endpoint(
            lambda: flow, remote_addr=(address, port), local_addr=(local, 0) if local else None
        )
    except OSError as exc:
        raise classify_os_error(exc, Op.CONNECT, f"{address} port {port} (UDP): {exc}") from None


class DirectDatagrams:
    """Datagrams straight to their destinations, resolved by `resolver`."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        idle: float = FLOW_IDLE,
        local_address: str | None = None,
    ) -> None:
        """`local_address`: the source address of every flow (the direct dialer's)."""
        self.resolver = resolver if resolver is not None else SystemResolver()
        self.idle = idle
        self.local_address = local_address

    def open(self, receive: Receive) -> DirectSession:
        return DirectSession(self, receive)

    def __repr__(self) -> str:
        return "DirectDatagrams()"


class DirectSession:
    def __init__(self, dialer: DirectDatagrams, receive: Receive) -> None:
        self._dialer = dialer
        self._receive = receive
        self._flows: dict[Endpoint, _Flow] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def flows(self) -> int:
        return len(self._flows)

    def ready(self, target: Endpoint) -> bool:
        flow = self._flows.get(target)
        return flow is not None and flow.transport is not None

    async def prepare(self, target: Endpoint) -> None:
        if self.ready(target):
            return
        ip = target.ip
        if ip is not None:
            addresses = [ip]
        else:
            addresses = await self._dialer.resolver.resolve(target.host)
            if not addresses:
                raise DialError(
                    Failure.DNS_NO_ANSWER, Op.RESOLVE, f"no addresses for {target.host}"
                )
        addresses = check_addresses(target.host, addresses)  # a LAN client's policy
        if self.closed:
            raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")
        local = self._dialer.local_address
        if local is not None:
            version = ipaddress.ip_address(local).version
            addresses = [a for a in addresses if a.version == version]
            if not addresses:
                raise DialError(
                    Failure.NETWORK_UNREACHABLE,
                    Op.CONNECT,
                    f"{target.host} has no IPv{version} address to send to from {local}",
                )
        address = addresses[0]

        def received(data: bytes) -> None:
            self._receive(data, target)

        flow = _Flow(received, lambda: self._lost(target, flow))
        await _connected_socket(str(address), target.port, flow, local)
        if self.closed or target in self._flows:  # closed meanwhile, or another got there
            assert flow.transport is not None
            flow.transport.close()
            if self.closed:
                raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")
            return
        self._flows[target] = flow
        if self._sweeper is None:
            self._schedule_sweep()

    def send(self, payload: bytes, target: Endpoint) -> None:
        flow = self._flows[target]
        flow.used = time.monotonic()
        assert flow.transport is not None
        flow.transport.sendto(payload)

    def _lost(self, target: Endpoint, flow: _Flow) -> None:
        if self._flows.get(target) is flow:
            del self._flows[target]

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(max(self._dialer.idle / 2, 0.05), self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self._dialer.idle
        for target, flow in list(self._flows.items()):
            if flow.used < cutoff and flow.transport is not None:
                del self._flows[target]
                flow.transport.close()
        if self._flows and not self.closed:
            self._schedule_sweep()

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        flows, self._flows = self._flows, {}
        for flow in flows.values():
            if flow.transport is not None:
                flow.transport.close()


class Socks5Datagrams:
    """Datagrams through an upstream SOCKS5 proxy's UDP ASSOCIATE (RFC 1928 §7)."""

    def __init__(self, upstream: Socks5Dialer) -> None:
        self.upstream = upstream

    def open(self, receive: Receive) -> Socks5Session:
        return Socks5Session(self.upstream, receive)

    def __repr__(self) -> str:
        return f"Socks5Datagrams({self.upstream.proxy})"


class Socks5Session:
    """One association through the upstream, made on the first datagram and made again
    after the upstream ends it (its control connection closed)."""

    def __init__(self, upstream: Socks5Dialer, receive: Receive) -> None:
        self._upstream = upstream
        self._receive = receive
        self._flow: _Flow | None = None
        self._control = None
        self._watch: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[None] | None = None
        self.closed = False
        self.malformed = 0  # datagrams from the upstream's relay that were not readable

    def ready(self, target: Endpoint) -> bool:
        return self._flow is not None and self._flow.transport is not None

    async def prepare(self, target: Endpoint) -> None:
        if self.ready(target):
            return
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._associate())
        await asyncio.shield(self._opening)

    async def _associate(self) -> None:
        control, relay = await self._upstream.associate()
        try:
            addresses = [ipaddress.ip_address(relay.host)] if relay.ip else None
            host = str(addresses[0]) if addresses else relay.host
            flow = _Flow(self._from_relay, self._relay_lost)
            await _connected_socket(host, relay.port, flow)
        except BaseException:
            control.abort()
            raise
        if self.closed:
            control.abort()
            assert flow.transport is not None
            flow.transport.close()
            raise DialError(Failure.UNKNOWN, Op.CONNECT, "the association ended")
        self._control, self._flow = control, flow
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_control(control, flow), name="detour-udp-upstream-control"
        )

    async def _watch_control(self, control, flow: _Flow) -> None:
        """The upstream's association lasts as long as its control connection: when the
        upstream closes it, the next datagram associates again."""
        with contextlib.suppress(OSError, ConnectionError):
            while await control.read(4096):
                pass
        if self._flow is flow:
            self._flow = None
        if flow.transport is not None:
            flow.transport.close()
        control.abort()

    def _from_relay(self, data: bytes) -> None:
        try:
            datagram = parse_datagram(data)
        except ProtocolError:
            self.malformed += 1
            return
        if datagram.frag:
            self.malformed += 1
            return
        self._receive(datagram.payload, datagram.address)

    def _relay_lost(self) -> None:
        pass

    def send(self, payload: bytes, target: Endpoint) -> None:
        assert self._flow is not None and self._flow.transport is not None
        self._flow.transport.sendto(encode_datagram(target, payload))

    def close(self) -> None:
        self.closed = True
        if self._watch is not None:
            self._watch.cancel()
        if self._flow is not None and self._flow.transport is not None:
            self._flow.transport.close()
        self._flow = None
        if self._control is not None:
            self._control.abort()


# --- which routes carry UDP -----------------------------------------------------------------

# Why a layer carries no UDP, as said to a user.
_TCP_ONLY = {
    "http": "an HTTP CONNECT proxy carries TCP only",
    "socks4a": "SOCKS4a has no UDP",
    "tgws": "tgws carries Telegram's MTProto over a WebSocket, not datagrams",
    "tlsfrag": "tlsfrag shapes TLS records over TCP",
    "split": "split shapes TCP segments",
    "pt": "pluggable transports carry TCP streams",
    "front": "UDP goes through the fronted tunnel only as its last layer",
    "ss": "Shadowsocks UDP goes straight to the server, not through other layers",
    "ssconf": "Shadowsocks UDP goes straight to the server, not through other layers",
    "disorder": "desync tricks shape TCP segments",
    "fake": "desync tricks shape TCP segments",
    "oob": "desync tricks shape TCP segments",
    "vless": "UDP goes through a proxy core only as the last layer",
    "vmess": "UDP goes through a proxy core only as the last layer",
    "trojan": "UDP goes through a proxy core only as the last layer",
}
_CORE_LAYERS = ("vless", "vmess", "trojan")


UDP_OFF = "its [[route]] says udp = false"


def udp_refusal(chain, *, off: bool = False) -> str | None:
    """Why a route with this parsed `chain` carries no UDP (a sentence), or None when its
    kind does: from the chain alone, without building it (`detour config check`, the
    status). `off`: the route's `udp = false` (its proxy refuses UDP ASSOCIATE).
    `datagram_dialer` gives the same answer for a built route."""
    if off:
        return UDP_OFF
    layers = list(chain.layers)  # the first is the base: direct (maybe implicit) or resolve
    last = layers[-1].name
    if last == "front":
        return None  # datagrams inside the tunnel; what is below it carries the tunnel
    if last in ("ss", "ssconf"):
        if any(layer.name not in ("direct", "resolve") for layer in layers[:-1]):
            return _TCP_ONLY["ss"]
        server = layers[-1].params.get("server") if last == "ss" else None
        if server is not None:
            from .shadowsocks.udp import udp_support

            return udp_support(server.key)
        return None
    if last in _CORE_LAYERS:
        if any(layer.name != "direct" for layer in layers[:-1]):
            return _TCP_ONLY[last]  # (the chain parser allows only direct before it)
        return None  # the core's SOCKS5 inbound takes UDP ASSOCIATE (core/datagrams.py)
    for layer in layers:
        if layer.name not in ("direct", "resolve", "socks5"):
            return _TCP_ONLY.get(layer.name, f"{layer.name} is a TCP-only layer")
    if len(layers[1:]) > 1:
        return "UDP goes through one SOCKS5 upstream at most, not a chain of them"
    return None


def datagram_dialer(name: str, chain, dialer, *, off: bool = False) -> DatagramDialer:
    """The UDP side of the route `name` (its parsed `chain` and its built `dialer`), or
    NoDatagrams saying why it has none (`off`: the route's `udp = false`)."""
    layers = list(chain.layers)  # the first is the base: direct (maybe implicit) or resolve

    def none(why: str) -> NoDatagrams:
        return NoDatagrams(f"route {name!r} ({chain}) carries no UDP: {why}")

    why = udp_refusal(chain, off=off)
    if why is not None:
        raise none(why)
    if layers[-1].name == "front":
        from .fronted.client import FrontDialer
        from .fronted.datagrams import FrontDatagrams

        front = _find(dialer, FrontDialer)
        if front is None:
            raise none("its fronted layer was not built")
        return FrontDatagrams(front)
    if layers[-1].name in ("ss", "ssconf"):
        return _shadowsocks(name, chain, dialer, none)
    if layers[-1].name in _CORE_LAYERS:
        from .core import CoreDialer
        from .core.datagrams import CoreDatagrams

        core = _find(dialer, CoreDialer)
        if core is None:
            raise none(f"its {layers[-1].name} layer was not built")
        return CoreDatagrams(core)
    if not layers[1:]:
        base = _innermost(dialer)
        local = getattr(base, "local_address", None)
        return DirectDatagrams(
            getattr(base, "resolver", None), local_address=str(local) if local else None
        )
    upstream = _find(dialer, Socks5Dialer)
    if upstream is None:
        raise none("its SOCKS5 layer was not built")
    return Socks5Datagrams(upstream)


def _shadowsocks(name: str, chain, dialer, none) -> DatagramDialer:
    """`ss://` or `ssconf://` as the only layer over direct or resolve: the server's UDP
    port (for ssconf://, the server its config names when an association starts)."""
    from .shadowsocks import OutlineDialer, ShadowsocksDialer
    from .shadowsocks.datagrams import ShadowsocksDatagrams
    from .shadowsocks.udp import udp_support

    if any(layer.name not in ("direct", "resolve") for layer in chain.layers[:-1]):
        raise none(_TCP_ONLY["ss"])
    ss = _find(dialer, ShadowsocksDialer) or _find(dialer, OutlineDialer)
    if ss is None:
        raise none("its Shadowsocks layer was not built")
    if isinstance(ss, ShadowsocksDialer):
        source = ss.server
        why = udp_support(source.key)
        if why is not None:
            raise none(why)
    else:
        source = ss.current_udp  # the config's UDP server, fetched as for TCP
    base = _innermost(dialer)
    local = getattr(base, "local_address", None)
    return ShadowsocksDatagrams(
        source,
        DirectDatagrams(
            getattr(base, "resolver", None), local_address=str(local) if local else None
        ),
    )


def _innermost(dialer):
    while (inner := getattr(dialer, "inner", None)) is not None:
        dialer = inner
    return dialer


def _find(dialer, kind):
    while dialer is not None:
        if isinstance(dialer, kind):
            return dialer
        dialer = getattr(dialer, "inner", None)
    return None
