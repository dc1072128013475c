"""What the terminal UI shows, computed from a status snapshot (helper/status.py) without any
UI code: the state of each (service, route) cell, each service's verdict, probe progress, and
the numbers of a live connection. The widgets only lay these out, so this module is tested on
its own and the words stay the same wherever they appear.

The cell texts come from the diagnosis vocabulary (helper/probe/diagnose.py); this module
adds only the states that are not a diagnosis: not tried, probing, disabled, and offline
(the network is down: helper/probe/network.py; no cell then blames censorship).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from transports import Failure, Op

from ..probe.diagnose import short, short_for

if TYPE_CHECKING:
    from ..probe.result import ProbeResult
    from ..status import (
        ConnectionView,
        Health,
        NetworkView,
        ProbeRound,
        RouteView,
        ServiceView,
        Snapshot,
    )

__all__ = [
    "ACTIVE",
    "FAILS",
    "NOT_TRIED",
    "NO_NETWORK",
    "OFF",
    "PINNED",
    "PROBING",
    "WORKS",
    "Cell",
    "ConnectionRow",
    "MatrixView",
    "ServiceHeader",
    "cell",
    "connection_row",
    "describe_network",
    "describe_probes",
    "format_bytes",
    "format_duration",
    "matrix",
    "service_header",
]

# Glyphs and words, never colour alone: each state has its own mark.
WORKS, FAILS, NOT_TRIED, PROBING, OFF = "✓", "✗", "·", "…", "–"
NO_NETWORK = "○"  # the network is down: nothing is known of the routes
# Before a cell's glyph: the route new connections of the service take first, or the one the
# user pinned (which is then the only one they take).
ACTIVE, PINNED = "▶", "◆"


@dataclass(frozen=True)
class Cell:
    """One service through one route, as the matrix shows it."""

    state: str  # ok, fail, unknown, probing, disabled, unused, offline
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
            "offline": NO_NETWORK,
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
    state: str  # ok, fail, unknown, probing, offline
    text: str  # "✓ via tls-fragment", "✗ no route works", "○ offline", ...


@dataclass(frozen=True)
class MatrixView:
    services: tuple[ServiceHeader, ...]
    routes: tuple[tuple[str, bool], ...]  # (route name, disabled)
    cells: tuple[tuple[Cell, ...], ...]  # [route][service]


def _works(health: Health) -> str:
    parts = ["works"]
    if health.latency_ms is not None:
        parts.append(f"{health.latency_ms:.0f} ms")
    return " ".join(parts)


def _fails(health: Health, result: ProbeResult | None, route: RouteView) -> str:
    splits, web = route.splits_client_hello, route.telegram_web
    # The probe's own result has the numbers (bytes before a freeze); use it when the health
    # still reflects that probe, not a later run of failed client connections.
    if result is not None and result.failed is not None and result.checked_at == health.checked_at:
        return short_for(result.failed, splits, web_endpoint=web)
    if health.source == "connection" and health.diagnosis:  # a live connection froze
        return health.diagnosis.replace("_", " ").replace("KB", " KB")  # "frozen after 16 KB"
    try:
        failure, op = Failure(health.failure), Op(health.op)
    except ValueError:  # missing, or written by another version of detour
        return health.failure or "fails"
    return short(
        failure, op, splits_client_hello=splits, rate_kbps=health.rate_kbps, web_endpoint=web
    )


def cell(snapshot: Snapshot, service: ServiceView, route: RouteView) -> Cell:
    """The state of `service` through `route`: disabled, probing, or what is known."""
    if route.name not in service.routes:
        return Cell("unused", "not its route")
    pinned = service.pinned == route.name
    if route.disabled:
        return Cell("disabled", "disabled", pinned=pinned)
    active = service.active == route.name
    if (service.name, route.name) in snapshot.probes.cells:
        return Cell("probing", "probing", active, pinned)
    health = snapshot.health_of(service.name, route.name)
    if health.failure == Failure.NOT_APPLICABLE.value:  # (tgws for a service without DCs)
        return Cell("unused", "not applicable")
    if snapshot.network.offline:
        return Cell("offline", "offline", active, pinned)
    if health.ok is None:
        return Cell(
            "unknown", "not tried" if service.service.probes else "no probes", active, pinned
        )
    if health.ok:
        return Cell("ok", _works(health), active, pinned)
    result = snapshot.result_of(service.name, route.name)
    return Cell("fail", _fails(health, result, route), active, pinned)


def service_header(snapshot: Snapshot, service: ServiceView) -> ServiceHeader:
    """Whether the service works, and through which route."""
    if snapshot.network.offline and not any(s == service.name for s, _ in snapshot.probes.cells):
        return ServiceHeader(service.name, "offline", f"{NO_NETWORK} offline")
    pinned = service.pinned
    if pinned is not None:
        ok = snapshot.health_of(service.name, pinned).ok
        glyph = WORKS if ok else (FAILS if ok is False else NOT_TRIED)
        state = "ok" if ok else ("fail" if ok is False else "unknown")
        return ServiceHeader(service.name, state, f"{glyph} pinned: {pinned}")
    if service.active is not None:
        return ServiceHeader(service.name, "ok", f"{WORKS} via {service.active}")
    if any(s == service.name for s, _ in snapshot.probes.cells):
        return ServiceHeader(service.name, "probing", f"{PROBING} probing")
    candidates = service.candidates
    if candidates and all(snapshot.health_of(service.name, r).ok is False for r in candidates):
        return ServiceHeader(service.name, "fail", f"{FAILS} no route works")
    if not candidates:
        return ServiceHeader(service.name, "fail", f"{FAILS} every route disabled")
    return ServiceHeader(service.name, "unknown", f"{NOT_TRIED} not known yet")


def matrix(snapshot: Snapshot) -> MatrixView:
    """Routes down, services across: services are few, routes are what users add."""
    services = snapshot.services
    return MatrixView(
        services=tuple(service_header(snapshot, s) for s in services),
        routes=tuple((r.name, r.disabled) for r in snapshot.routes),
        cells=tuple(tuple(cell(snapshot, s, r) for s in services) for r in snapshot.routes),
    )


def describe_network(network: NetworkView) -> str:
    """The status line's word on the network: empty unless it is down."""
    if not network.offline:
        return ""
    return f"{NO_NETWORK} offline: {network.reason}; probing again when it is back"


def describe_probes(probes: ProbeRound, last_probe: float | None, now: float) -> str:
    """The status line's probe progress. `last_probe`: when the latest probe result came
    (wall clock), if any did."""
    if probes.cells:
        return f"probing {PROBING} {probes.finished}/{probes.started}"
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


def connection_row(connection: ConnectionView, now: float) -> ConnectionRow:
    """`now` is time.monotonic() (connections start on that clock)."""
    return ConnectionRow(
        client=connection.client,
        destination=connection.target or "…",
        service=connection.service or "–",
        route=connection.route or "connecting…",
        up=format_bytes(connection.up),
        down=format_bytes(connection.down),
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
