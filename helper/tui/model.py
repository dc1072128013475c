"""What the terminal UI shows, computed from the engine's state without any UI code: the state
of each (service, route) cell, each service's verdict, probe progress, and the numbers of a
live connection. The widgets only lay these out, so this module is tested on its own and the
words stay the same wherever they appear.

The cell texts come from the diagnosis vocabulary (helper/probe/diagnose.py); this module
adds only the states that are not a diagnosis: not tried, probing, disabled.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transports import Failure, Op

from ..probe.diagnose import short, short_for

if TYPE_CHECKING:
    from ..probe.result import ProbeResult
    from ..proxy.listener import ActiveConnection
    from ..routing.health import RouteHealth
    from ..routing.monitor import HealthMonitor
    from ..routing.router import Route, Router
    from ..services import Service

__all__ = [
    "ACTIVE",
    "FAILS",
    "NOT_TRIED",
    "OFF",
    "PINNED",
    "PROBING",
    "WORKS",
    "Cell",
    "ConnectionRow",
    "MatrixView",
    "ProbeProgress",
    "ServiceHeader",
    "cell",
    "connection_row",
    "format_bytes",
    "format_duration",
    "matrix",
    "service_header",
]

# Glyphs and words, never colour alone: each state has its own mark.
WORKS, FAILS, NOT_TRIED, PROBING, OFF = "✓", "✗", "·", "…", "–"
# Before a cell's glyph: the route new connections of the service take first, or the one the
# user pinned (which is then the only one they take).
ACTIVE, PINNED = "▶", "◆"


@dataclass(frozen=True)
class Cell:
    """One service through one route, as the matrix shows it."""

    state: str  # ok, fail, unknown, probing, disabled, unused
    text: str  # "works 84 ms", "reset after ClientHello", "not tried", ...
    active: bool = False
    pinned: bool = False

    @property
    def glyph(self) -> str:
        return {
            "ok": WORKS,
            "fail": FAILS,
            "probing": PROBING,
            "disabled": OFF,
            "unused": OFF,
        }.get(self.state, NOT_TRIED)

    @property
    def mark(self) -> str:
        return PINNED if self.pinned else (ACTIVE if self.active else " ")

    def label(self) -> str:
        return f"{self.mark}{self.glyph} {self.text}"


@dataclass(frozen=True)
class ServiceHeader:
    """A service's verdict above its column."""

    name: str
    state: str  # ok, fail, unknown, probing
    text: str  # "✓ via tls-fragment", "✗ no route works", ...


@dataclass(frozen=True)
class MatrixView:
    services: tuple[ServiceHeader, ...]
    routes: tuple[tuple[str, bool], ...]  # (route name, disabled)
    cells: tuple[tuple[Cell, ...], ...]  # [route][service]


def _works(health: RouteHealth) -> str:
    parts = ["works"]
    if health.latency_ms is not None:
        parts.append(f"{health.latency_ms:.0f} ms")
    return " ".join(parts)


def _fails(health: RouteHealth, result: ProbeResult | None, route: Route) -> str:
    splits, web = route.chain.splits_client_hello, route.chain.telegram_web
    # The probe's own result has the numbers (bytes before a freeze); use it when the health
    # still reflects that probe, not a later run of failed client connections.
    if result is not None and result.failed is not None and result.checked_at == health.checked_at:
        return short_for(result.failed, splits, web_endpoint=web)
    try:
        failure, op = Failure(health.failure), Op(health.op)
    except ValueError:  # missing, or written by another version of detour
        return health.failure or "fails"
    return short(
        failure, op, splits_client_hello=splits, rate_kbps=health.rate_kbps, web_endpoint=web
    )


def cell(
    router: Router,
    monitor: HealthMonitor,
    service: Service,
    route: Route,
    probing: Collection[tuple[str, str]] = (),
) -> Cell:
    """The state of `service` through `route`: disabled, probing, or what is known."""
    if service.routes and route.name not in service.routes:
        return Cell("unused", "not its route")
    pinned = router.pins.get(service.name) == route.name
    if route.name in router.disabled:
        return Cell("disabled", "disabled", pinned=pinned)
    active_route = router.active_route(service)
    active = active_route is not None and active_route.name == route.name
    if (service.name, route.name) in probing:
        return Cell("probing", "probing", active, pinned)
    health = router.health.get(service.name, route.name)
    if health.failure == Failure.NOT_APPLICABLE.value:  # (tgws for a service without DCs)
        return Cell("unused", "not applicable")
    if health.ok is None:
        return Cell("unknown", "not tried" if service.probes else "no probes", active, pinned)
    if health.ok:
        return Cell("ok", _works(health), active, pinned)
    result = monitor.results.get((service.name, route.name))
    return Cell("fail", _fails(health, result, route), active, pinned)


def service_header(
    router: Router, service: Service, probing: Collection[tuple[str, str]] = ()
) -> ServiceHeader:
    """Whether the service works, and through which route."""
    pinned = router.pins.get(service.name)
    if pinned is not None:
        ok = router.health.get(service.name, pinned).ok
        glyph = WORKS if ok else (FAILS if ok is False else NOT_TRIED)
        state = "ok" if ok else ("fail" if ok is False else "unknown")
        return ServiceHeader(service.name, state, f"{glyph} pinned: {pinned}")
    active = router.active_route(service)
    if active is not None:
        return ServiceHeader(service.name, "ok", f"{WORKS} via {active.name}")
    if any(s == service.name for s, _ in probing):
        return ServiceHeader(service.name, "probing", f"{PROBING} probing")
    candidates = router.candidates(service)
    if candidates and all(router.health.get(service.name, r.name).ok is False for r in candidates):
        return ServiceHeader(service.name, "fail", f"{FAILS} no route works")
    if not candidates:
        return ServiceHeader(service.name, "fail", f"{FAILS} every route disabled")
    return ServiceHeader(service.name, "unknown", f"{NOT_TRIED} not known yet")


def matrix(
    router: Router, monitor: HealthMonitor, probing: Collection[tuple[str, str]] = ()
) -> MatrixView:
    """Routes down, services across: services are few, routes are what users add."""
    services = list(router.services)
    return MatrixView(
        services=tuple(service_header(router, s, probing) for s in services),
        routes=tuple((r.name, r.name in router.disabled) for r in router.routes),
        cells=tuple(
            tuple(cell(router, monitor, s, r, probing) for s in services) for r in router.routes
        ),
    )


@dataclass
class ProbeProgress:
    """Which cells are being probed, and how far the current round of probes has got.

    Fed with ProbeStarted/ProbeFinished as they arrive. The event stream may drop events for
    a slow consumer (and a UI may subscribe after probes started), so `settle` checks the
    cells against the services the monitor says it is probing, adding every route of one it
    has no start for and dropping those of services no longer probed."""

    cells: set[tuple[str, str]] = field(default_factory=set)
    started: int = 0  # in the current round
    finished: int = 0

    def start(self, service: str, route: str) -> None:
        if not self.cells:
            self.started = self.finished = 0
        if (service, route) not in self.cells:
            self.cells.add((service, route))
            self.started += 1

    def finish(self, service: str, route: str) -> None:
        if (service, route) in self.cells:
            self.cells.discard((service, route))
            self.finished += 1

    def settle(self, probing: Mapping[str, Iterable[str]]) -> None:
        """`probing`: service -> the routes its probe goes through, for every service the
        monitor is probing now."""
        self.cells = {c for c in self.cells if c[0] in probing}
        tracked = {service for service, _ in self.cells}
        for service, routes in probing.items():
            if service not in tracked:
                for route in routes:
                    self.start(service, route)

    @property
    def running(self) -> bool:
        return bool(self.cells)

    def describe(self, last_probe: float | None, now: float) -> str:
        """`last_probe`: when the latest probe result came (wall clock), if any did."""
        if self.cells:
            return f"probing {PROBING} {self.finished}/{self.started}"
        if last_probe is None:
            return "not probed yet"
        return f"probed {format_duration(max(0.0, now - last_probe))} ago"


@dataclass(frozen=True)
class ConnectionRow:
    client: str
    destination: str
    service: str
    route: str
    up: str
    down: str
    duration: str


def connection_row(connection: ActiveConnection, now: float) -> ConnectionRow:
    """`now` is time.monotonic() (connections start on that clock)."""
    return ConnectionRow(
        client=connection.client,
        destination=str(connection.target) if connection.target else "…",
        service=connection.service or "–",
        route=connection.route or "connecting…",
        up=format_bytes(connection.stats.up),
        down=format_bytes(connection.stats.down),
        duration=format_duration(max(0.0, now - connection.started)),
    )


def format_bytes(n: int) -> str:
    """1000-based, as the diagnoses count KB."""
    if n < 1000:
        return f"{n} B"
    value, unit = n / 1000, "KB"
    for bigger in ("MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"
