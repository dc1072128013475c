"""What detour knows about each route for each service: the last probe's verdict, what dials
through it have done since, and the order that follows from it.

Health only orders routes, it never forbids one: working routes first (in the service's
order), those whose probe could not be sure there is no freeze after the sure ones, then
routes not yet known, then failing ones -- so a network where nothing is known to work
still gets every route tried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from transports import DialError

from ..status import Health
from .stall_hold import StallHold

if TYPE_CHECKING:
    from ..probe.result import ProbeResult

__all__ = ["DIAL_FAILURES_BEFORE_REPROBE", "HealthBook", "RouteHealth"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)

# Consecutive dial failures of a route that make it count as failing (and ask for a re-probe).
DIAL_FAILURES_BEFORE_REPROBE = 3


@dataclass
class RouteHealth:
    ok: bool | None = None  # None: not known
    failure: str | None = None
    op: str | None = None
    diagnosis: str = ""
    latency_ms: float | None = None
    rate_kbps: float | None = None
    checked_at: float = 0.0  # wall-clock time of what this is based on
    source: str = ""  # "probe", "dial" or "memory" (a previous run on this network)
    dial_failures: int = 0  # consecutive, since the last success
    # The probe passed with its freeze check unsure (out of time while the answers still
    # came, probe/volume.py): it ranks after routes that passed the check.
    freeze_unsure: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def frozen(self) -> Health:
        return Health(
            self.ok,
            self.failure,
            self.op,
            self.diagnosis,
            self.latency_ms,
            self.rate_kbps,
            self.checked_at,
            self.source,
            self.dial_failures,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteHealth:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class HealthBook:
    """Health per (service, route). The service key "" stands for destinations that belong
    to no service."""

    def __init__(self) -> None:
        self._health: dict[tuple[str, str], RouteHealth] = {}
        self._stall_details: dict[tuple[str, str], str] = {}
        self._held: dict[tuple[str, str], str] = {}  # why a passing probe did not count
        self.stall_hold = StallHold()  # a live freeze outweighs the next passing probe

    def get(self, service: str, route: str) -> RouteHealth:
        return self._health.get((service, route)) or RouteHealth()

    def items(self) -> list[tuple[tuple[str, str], RouteHealth]]:
        return list(self._health.items())

    def frozen(self) -> dict[tuple[str, str], Health]:
        """Every entry as an immutable copy (for a status snapshot)."""
        return {key: health.frozen() for key, health in self._health.items()}

    def set(self, service: str, route: str, health: RouteHealth) -> None:
        self._health[(service, route)] = health

    def forget(self, route: str) -> None:
        """Drop what is known about `route`, for every service."""
        for key in [key for key in self._health if key[1] == route]:
            del self._health[key]
        self.stall_hold.forget(route)

    def record_probe(self, result: ProbeResult) -> bool:
        """The probe's verdict becomes the route's health; False when it did not because live
        connections froze through the route too recently (progress.StallHold): then the stall
        verdict stays, with the probe's latency and why it was held."""
        key = (result.service, result.route)
        if result.ok and key in self.stall_hold:
            checked = any(target.freeze_checked for target in result.targets)
            held = self.stall_hold.probe_passed(key, checked, time.monotonic())
            stall = self._health.get(key)
            if held and stall is not None and stall.ok is False:
                stall.latency_ms = result.latency_ms
                self._held[key] = held
                return False
        self._held.pop(key, None)
        self._health[key] = RouteHealth(
            ok=result.ok,
            failure=result.failure.value if result.failure else None,
            op=result.op.value if result.op else None,
            diagnosis=result.diagnosis,
            latency_ms=result.latency_ms,
            rate_kbps=result.rate_kbps,
            checked_at=result.checked_at,
            source="probe",
            freeze_unsure=bool(result.freeze_unsure),
        )
        return True

    def record_dial(self, service: str, route: str, error: DialError | None) -> bool:
        """Account a client connection through a route: `error` if it failed (to dial, or to
        get an answer), None once the destination answered. True when the failure tips the
        route into failing. (A dial alone that succeeds proves little: DPI strikes after it.)"""
        health = self._health.get((service, route))
        if error is None:
            if health is not None:
                health.dial_failures = 0
            return False
        if health is None:
            health = self._health[(service, route)] = RouteHealth()
        health.dial_failures += 1
        if health.dial_failures == DIAL_FAILURES_BEFORE_REPROBE:
            health.ok = False
            health.failure, health.op = error.failure.value, error.op.value
            health.diagnosis = f"{health.dial_failures} connections in a row failed: {error}"
            health.checked_at = time.time()
            health.source = "dial"
            return True
        return False

    def record_stall(self, service: str, route: str, diagnosis: str, detail: str) -> bool:
        """A live connection through `route` stopped making progress while its peer still
        had data to send (progress.py): the route fails at once, for this service. True when
        that turns it failing (it was not already)."""
        health = self._health.get((service, route))
        was_failing = health is not None and health.ok is False
        self._health[(service, route)] = RouteHealth(
            ok=False,
            failure="stalled",
            op="read",
            diagnosis=diagnosis,
            latency_ms=health.latency_ms if health is not None else None,
            checked_at=time.time(),
            source="connection",
            dial_failures=health.dial_failures if health is not None else 0,
        )
        self._stall_details[(service, route)] = detail
        self._held.pop((service, route), None)
        self.stall_hold.stalled((service, route), time.monotonic())
        return not was_failing

    def stall_detail(self, service: str, route: str) -> str:
        """The words of the last stall recorded for (service, route), and why a passing
        probe since did not end it; "" when none."""
        detail = self._stall_details.get((service, route), "")
        held = self._held.get((service, route))
        return f"{detail}; {held}" if held and detail else held or detail

    def order(self, service: str, routes: Sequence[R]) -> list[R]:
        """Working routes first (in the given order; those whose freeze check was unsure
        after the sure ones), then unknown, then failing."""
        return sorted(routes, key=lambda route: self._rank(service, route.name))  # stable

    def active(self, service: str, routes: Sequence[R]) -> R | None:
        """The route new connections of this service go to first, if one is known to work
        (one whose freeze check was unsure only when no other is)."""
        working = [route for route in routes if self._rank(service, route.name) < 2]
        return min(working, key=lambda route: self._rank(service, route.name), default=None)

    def _rank(self, service: str, route: str) -> int:
        health = self.get(service, route)
        if health.ok:
            return 1 if health.freeze_unsure else 0
        return 2 if health.ok is None else 3
