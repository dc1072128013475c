"""What a running detour is doing, as one immutable value: the services and routes, what is
known about each route for each service, the route each service takes now, the latest probe
results, the probes running, the open connections, the listeners, and the counters.

The status API (`api.py`, `metrics.py`), the terminal UI (`tui/`) and the headless runner
read a `Snapshot` that the engine takes on request (`Engine.snapshot()`), instead of walking
the router, the monitor and the connection table themselves. Taking one costs a copy of the
small tables (services x routes) and one row per open connection; nothing here holds a
reference back into the proxy, so a snapshot can be kept, compared and rendered at leisure.

The counters are kept where their events happen (`Tally`: the client server counts
connections and bytes, the router failed dials, the monitor probes), so nobody recounts
them from a stream of events that may drop some.

A leaf module: it imports nothing from the engine, the router or the proxy.
"""

from __future__ import annotations

import types
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from transports.mtproto.secret import ProxyLink

    from .probe.result import ProbeResult
    from .services import Service

__all__ = [
    "PROBE_BUCKETS",
    "ConnectionView",
    "Counters",
    "Health",
    "Histogram",
    "LinkView",
    "ListenerView",
    "NetworkView",
    "ProbeRound",
    "ProbeTally",
    "RouteView",
    "SearchView",
    "ServiceView",
    "Snapshot",
    "Tally",
    "UdpHealthView",
    "UdpProbesView",
    "UdpRouteView",
    "UdpView",
    "frozen_mapping",
]

# Upper bounds (seconds) of the probe duration histogram: a probe is one or a few round trips
# (fast), or waits for its timeout (5 s by default).
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


K = TypeVar("K")
V = TypeVar("V")


def frozen_mapping(items: Mapping[K, V] | Iterable[tuple[K, V]]) -> Mapping[K, V]:
    """A read-only copy."""
    return types.MappingProxyType(dict(items))


@dataclass(frozen=True, slots=True)
class Health:
    """What is known about one route for one service (helper/routing/health.py keeps it)."""

    ok: bool | None = None  # None: not known
    failure: str | None = None
    op: str | None = None
    diagnosis: str = ""
    latency_ms: float | None = None
    rate_kbps: float | None = None
    checked_at: float = 0.0  # wall-clock time of what this is based on
    source: str = ""  # "probe", "dial" or "memory" (a previous run on this network)
    dial_failures: int = 0  # consecutive, since the last success


UNKNOWN = Health()


@dataclass(frozen=True, slots=True)
class RouteView:
    name: str
    chain: str  # as configured, credentials redacted
    splits_client_hello: bool
    telegram_web: bool  # it carries Telegram through the web endpoints (tgws)
    disabled: bool


@dataclass(frozen=True, slots=True)
class ServiceView:
    service: Service  # as configured: domains, address ranges, ports, probe targets
    routes: tuple[str, ...]  # the routes it may take: its own, else every route in order
    candidates: tuple[str, ...]  # what a new connection may take now: the pin, or the
    # enabled ones of `routes` (in config order, before health orders them)
    pinned: str | None  # the route the user pinned it to
    active: str | None  # the route new connections try first, when one is known to work
    probing: bool  # a probe of it is running

    @property
    def name(self) -> str:
        return self.service.name


@dataclass(frozen=True, slots=True)
class ConnectionView:
    id: int
    listener: str  # the kind of listener it came in on: "mixed", "whatsapp-chat", ...
    client: str
    protocol: str  # "" until its handshake said
    target: str | None
    service: str | None
    route: str | None  # None: still in its handshake or choosing a route
    started: float  # time.monotonic()
    up: int
    down: int

    @property
    def state(self) -> str:
        return "relaying" if self.route is not None else "connecting"


@dataclass(frozen=True, slots=True)
class ListenerView:
    kind: str  # mixed, transparent, whatsapp-tls, ..., api
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NetworkView:
    """Whether the network is up (helper/probe/network.py decides): "online" (something
    answered), "offline" (nothing did: no service, no DNS, no control target, or no route
    at all) or "unknown" (not measured yet, or nothing to tell)."""

    state: str = "unknown"
    reason: str = ""
    checked_at: float = 0.0  # wall clock; 0: never

    @property
    def offline(self) -> bool:
        return self.state == "offline"

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.reason,
            "checked_at": round(self.checked_at, 3) if self.checked_at else None,
        }


@dataclass(frozen=True, slots=True)
class LinkView:
    """An endpoint phones are pointed at with a link: where it is, and the links that set it
    up in the app (`signal`: https://signal.tube/#HOST and sgnl://signal.tube/#HOST)."""

    kind: str  # signal
    host: str  # the name (or address) the links carry
    port: int
    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProbeRound:
    """The probes running now and how far the current round has got."""

    cells: frozenset[tuple[str, str]] = frozenset()  # (service, route) being probed
    started: int = 0  # in the current round
    finished: int = 0

    @property
    def running(self) -> bool:
        return bool(self.cells)


@dataclass(frozen=True, slots=True)
class Histogram:
    buckets: tuple[int, ...]  # counts per PROBE_BUCKETS bound (cumulative)
    count: int
    sum: float


@dataclass(frozen=True)
class Counters:
    """Totals since start, by label tuple."""

    connections: Mapping[tuple[str, str], int]  # (service, route): reached the destination
    bytes: Mapping[tuple[str, str, str], int]  # (service, route, up|down), ended connections
    failures: Mapping[tuple[str, str, str, str, str], int]  # (source, service, route,
    # failure, op); source: probe or connection
    probe_seconds: Mapping[tuple[str, str], Histogram]  # (service, route)


@dataclass(frozen=True, slots=True)
class SearchView:
    """The latest strategy search (helper/search/): running or finished, and per service
    what it tried and what won, as `detour probe --json` prints it (docs/search.md)."""

    running: bool
    started: float  # time.time()
    finished: float | None
    services: Mapping[str, Mapping[str, object]]  # service -> {winner, verdict, tried}


@dataclass(frozen=True, slots=True)
class UdpView:
    """The UDP associations of one listener (helper/proxy/udp.py's UdpBudget): "mixed"
    (SOCKS5 UDP ASSOCIATE) or "transparent-udp" (TPROXY). Totals since start, open ones
    included."""

    listener: str
    open: int  # associations open now
    opened: int  # since start
    refused: int  # associations refused: listen.udp_associations_per_client
    idle_ended: int  # associations ended by listen.udp_idle_timeout
    in_flight: int  # datagrams waiting for their route now
    datagrams: Mapping[str, int]  # up | down: datagrams sent
    bytes: Mapping[str, int]  # up | down: their payloads
    dropped: Mapping[str, int]  # reason -> datagrams (every reason, zeros too)

    def to_json(self) -> dict[str, object]:
        return {
            "listener": self.listener,
            "associations_open": self.open,
            "associations_total": self.opened,
            "associations_refused": self.refused,
            "associations_idle_ended": self.idle_ended,
            "in_flight": self.in_flight,
            "datagrams_up": self.datagrams.get("up", 0),
            "datagrams_down": self.datagrams.get("down", 0),
            "bytes_up": self.bytes.get("up", 0),
            "bytes_down": self.bytes.get("down", 0),
            "dropped": dict(self.dropped),
        }


@dataclass(frozen=True, slots=True)
class UdpHealthView:
    """The latest UDP probe of a service through a route (helper/probe/udp.py): the
    `detour probe --json` row, and when."""

    ok: bool
    diagnosis: str
    row: Mapping[str, object]  # route, ok, diagnosis, detail, rtt_ms, targets
    checked_at: float  # wall clock

    def to_json(self) -> dict[str, object]:
        return {**self.row, "checked_at": round(self.checked_at, 3)}


@dataclass(frozen=True, slots=True)
class UdpRouteView:
    """One route's UDP: whether its kind carries UDP at all (transports/datagram.py's
    udp_refusal), and the latest UDP probe through it of each service with `udp_probes`
    (helper/routing/udp_monitor.py)."""

    route: str
    why_not: str | None  # None: its kind carries UDP; else why not, in a sentence
    verdicts: Mapping[str, UdpHealthView]  # service -> its latest UDP probe through it

    @property
    def ok(self) -> bool | None:
        """True: every service's latest UDP probe through it passed; False: one did not;
        None: never probed."""
        if not self.verdicts:
            return None
        return all(view.ok for view in self.verdicts.values())

    def to_json(self) -> dict[str, object]:
        return {
            "route": self.route,
            "carries_udp": self.why_not is None,
            "why_not": self.why_not,
            "ok": self.ok,
            "services": [
                {
                    "service": service,
                    "ok": view.ok,
                    "diagnosis": view.diagnosis,
                    "rtt_ms": view.row.get("rtt_ms"),
                    "checked_at": round(view.checked_at, 3),
                }
                for service, view in sorted(self.verdicts.items())
            ],
        }


@dataclass(frozen=True, slots=True)
class UdpProbesView:
    """The UDP monitor's rounds (helper/routing/udp_monitor.py)."""

    services: int  # services with udp_probes
    rounds: int  # rounds finished since start
    running: bool  # a round is under way
    last_round_at: float | None  # wall clock; None before the first
    skipped_offline: int  # rounds skipped because the network was down
    network_back: int  # rounds asked for because the network came back
    interval_s: float

    def to_json(self) -> dict[str, object]:
        return {
            "services": self.services,
            "rounds": self.rounds,
            "running": self.running,
            "last_round_at": None if self.last_round_at is None else round(self.last_round_at, 3),
            "skipped_offline": self.skipped_offline,
            "network_back": self.network_back,
            "interval_s": self.interval_s,
        }


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # time.time()
    monotonic: float  # time.monotonic() at the same moment
    services: tuple[ServiceView, ...]
    routes: tuple[RouteView, ...]
    health: Mapping[tuple[str, str], Health]  # (service, route); missing: not known
    results: Mapping[tuple[str, str], ProbeResult]  # the latest probe of each cell
    probes: ProbeRound
    connections: tuple[ConnectionView, ...]  # by id
    listeners: tuple[ListenerView, ...]  # in start order: mixed first
    counters: Counters
    default_policy: str = ""
    network: NetworkView = NetworkView()
    search: SearchView | None = None  # None: no search has run
    # The MTProto proxy endpoint's users and links (secrets inside: shown hidden unless the
    # owner asks, helper/api.py); empty when [mtproto_proxy] is off.
    mtproto_links: tuple[ProxyLink, ...] = field(default=(), repr=False)
    links: tuple[LinkView, ...] = ()  # endpoints set up by a link (the Signal proxy)
    udp: tuple[UdpView, ...] = ()  # per UDP listener: associations, datagrams, drops
    # The latest UDP probe per (service, route) (docs/udp.md "UDP health and probes").
    udp_health: Mapping[tuple[str, str], UdpHealthView] = field(default_factory=dict)
    udp_routes: tuple[UdpRouteView, ...] = ()  # each route's UDP: carried, latest verdicts
    udp_probes: UdpProbesView | None = None  # the UDP monitor's rounds (None: no monitor)
    _services: Mapping[str, ServiceView] = field(default_factory=dict, repr=False)
    _routes: Mapping[str, RouteView] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_services", {s.name: s for s in self.services})
        object.__setattr__(self, "_routes", {r.name: r for r in self.routes})

    def service(self, name: str) -> ServiceView:
        return self._services[name]

    def route(self, name: str) -> RouteView:
        return self._routes[name]

    def health_of(self, service: str, route: str) -> Health:
        return self.health.get((service, route), UNKNOWN)

    def result_of(self, service: str, route: str) -> ProbeResult | None:
        return self.results.get((service, route))

    def listening(self, kind: str) -> tuple[ListenerView, ...]:
        return tuple(listener for listener in self.listeners if listener.kind == kind)

    @property
    def last_probe(self) -> float | None:
        """When the latest probe result came (wall clock), if any did."""
        return max((r.checked_at for r in self.results.values()), default=None)


# --- counters, kept where their events happen ----------------------------------------------


class _Bins:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(PROBE_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(PROBE_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1

    def freeze(self) -> Histogram:
        return Histogram(tuple(self.buckets), self.count, self.sum)


class Tally:
    """The counters behind `Counters`, told by whoever sees each event: the client server
    (a connection reached its destination, a connection ended), the router (a client's dial
    failed) and the monitor (a probe finished). One per engine, shared across reloads."""

    def __init__(self) -> None:
        self._connections: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._bytes: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._failures: defaultdict[tuple[str, str, str, str, str], int] = defaultdict(int)
        self._probe_seconds: defaultdict[tuple[str, str], _Bins] = defaultdict(_Bins)

    def connection_opened(self, service: str | None, route: str) -> None:
        self._connections[(service or "", route)] += 1

    def connection_closed(self, service: str | None, route: str, up: int, down: int) -> None:
        self._bytes[(service or "", route, "up")] += up
        self._bytes[(service or "", route, "down")] += down

    def dial_failed(self, service: str | None, route: str, failure: str, op: str) -> None:
        self._failures[("connection", service or "", route, failure, op)] += 1

    def probe_finished(
        self, service: str, route: str, seconds: float, failure: str | None, op: str | None
    ) -> None:
        self._probe_seconds[(service, route)].observe(seconds)
        if failure is not None and op is not None:
            self._failures[("probe", service, route, failure, op)] += 1

    def freeze(self) -> Counters:
        return Counters(
            frozen_mapping(self._connections),
            frozen_mapping(self._bytes),
            frozen_mapping(self._failures),
            frozen_mapping((k, v.freeze()) for k, v in self._probe_seconds.items()),
        )


class ProbeTally:
    """Which cells are being probed and how far the current round has got: told by the
    monitor as each probe starts and ends."""

    def __init__(self) -> None:
        self.cells: set[tuple[str, str]] = set()
        self.started = 0
        self.finished = 0

    def start(self, service: str, route: str) -> None:
        if not self.cells:
            self.started = self.finished = 0  # a new round
        if (service, route) not in self.cells:
            self.cells.add((service, route))
            self.started += 1

    def finish(self, service: str, route: str) -> None:
        if (service, route) in self.cells:
            self.cells.discard((service, route))
            self.finished += 1

    def freeze(self) -> ProbeRound:
        return ProbeRound(frozenset(self.cells), self.started, self.finished)
