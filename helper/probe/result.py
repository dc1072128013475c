"""What a probe found: per target, the steps it took and the first that failed; per service and
route, the verdict and a diagnosis a person understands. These are what `detour probe --json`
prints, what the status API serves and what the terminal UI shows.

A target the route cannot carry at all (a `tgws` route and a target that is no Telegram DC)
is skipped: it says nothing either way, and the verdict rests on the other targets. A route
that can carry none of a service's targets is "not applicable" to it (failure
`not_applicable`): it does not work for that service, and that says nothing of the route."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from transports import Failure, Op

__all__ = ["ProbeResult", "Step", "TargetResult"]


@dataclass
class Step:
    name: str  # resolve, connect, tls_handshake, volume, http_round_trip, mtproto_round_trip,
    # download
    ms: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "ms": round(self.ms, 1), "ok": self.ok}


@dataclass
class TargetResult:
    """One probe target through one route."""

    target: str
    ok: bool = True
    failure: Failure | None = None
    op: Op | None = None
    detail: str = ""
    steps: list[Step] = field(default_factory=list)
    latency_ms: float | None = None  # until the service could be spoken to (connect, TLS)
    rate_kbps: float | None = None  # download rate, KB/s (1000 bytes)
    received: int = 0  # body bytes of a download; bytes of answers after a TLS handshake
    # A tls:// probe's freeze check (volume.py): True when FREEZE_WINDOW bytes came back, False
    # when the server's answers could not show a freeze; None for kinds that do no check.
    freeze_checked: bool | None = None
    # Why the freeze check is unsure (volume.freeze_verdict: out of time while the answers
    # still came, twice); "" when it is not. The target passes, ranked below a sure pass.
    freeze_unsure: str = ""
    skipped: str = ""  # why the route cannot carry this target (then it was not probed)

    def fail(self, failure: Failure, op: Op, detail: str) -> TargetResult:
        self.ok, self.failure, self.op, self.detail = False, failure, op, detail
        return self

    def skip(self, reason: str) -> TargetResult:
        self.skipped = self.detail = reason
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": None if self.skipped else self.ok,
            "skipped": bool(self.skipped),
            "failure": self.failure.value if self.failure else None,
            "op": self.op.value if self.op else None,
            "detail": self.detail,
            "latency_ms": _round(self.latency_ms),
            "rate_kbps": _round(self.rate_kbps),
            "received": self.received,
            "freeze_checked": self.freeze_checked,
            "freeze_unsure": bool(self.freeze_unsure),
            "steps": [step.to_json() for step in self.steps],
        }


@dataclass
class ProbeResult:
    """A service through a route: it works when every probe target works."""

    service: str
    route: str
    chain: str  # redacted
    targets: list[TargetResult]
    diagnosis: str = ""
    checked_at: float = field(default_factory=time.time)

    @property
    def applicable(self) -> bool:
        """Whether the route could carry at least one of the targets (or there are none)."""
        return not self.targets or any(not t.skipped for t in self.targets)

    @property
    def ok(self) -> bool:
        return self.applicable and all(t.ok for t in self.targets)

    @property
    def failed(self) -> TargetResult | None:
        """The first target that failed (in the service's probe order)."""
        return next((t for t in self.targets if not t.ok), None)

    @property
    def failure(self) -> Failure | None:
        if not self.applicable:
            return Failure.NOT_APPLICABLE
        failed = self.failed
        return failed.failure if failed else None

    @property
    def op(self) -> Op | None:
        if not self.applicable:
            return Op.CONNECT
        failed = self.failed
        return failed.op if failed else None

    @property
    def freeze_unsure(self) -> str:
        """Why the route passed with its freeze check unsure; "" when it did not."""
        if not self.ok:
            return ""
        return next((t.freeze_unsure for t in self.targets if t.freeze_unsure), "")

    @property
    def latency_ms(self) -> float | None:
        values = [t.latency_ms for t in self.targets if t.latency_ms is not None]
        return values[0] if values else None

    @property
    def rate_kbps(self) -> float | None:
        values = [t.rate_kbps for t in self.targets if t.rate_kbps is not None]
        return min(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "chain": self.chain,
            "ok": self.ok,
            "failure": self.failure.value if self.failure else None,
            "op": self.op.value if self.op else None,
            "diagnosis": self.diagnosis,
            "latency_ms": _round(self.latency_ms),
            "rate_kbps": _round(self.rate_kbps),
            "checked_at": round(self.checked_at, 3),
            "targets": [t.to_json() for t in self.targets],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
