"""UDP health, kept apart from TCP health (health.py): a network can pass a route's TCP and
drop its UDP, so a service's calls may need another route than its chats. The verdicts come
from UDP probes (helper/probe/udp.py); a listener's UDP associations (helper/proxy/udp.py)
try routes whose UDP is known to work first and routes whose UDP was seen dropped last."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ..status import UdpHealthView
from .health import _Named

__all__ = ["UdpHealth"]

R = TypeVar("R", bound=_Named)


class UdpHealth:
    """The last UDP verdict per (service, route): True works, False dropped or not carried;
    none for a route never probed."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._latest: dict[tuple[str, str], UdpHealthView] = {}

    def record(
        self, service: str | None, route: str, ok: bool, row: Mapping[str, Any] | None = None
    ) -> None:
        """A verdict; `row`: the probe's result as `detour probe --json` has it, which the
        status shows (`latest`)."""
        self._verdicts[(service or "", route)] = ok
        if row is not None:
            self._latest[(service or "", route)] = UdpHealthView(
                ok, str(row.get("diagnosis", "")), dict(row), time.time()
            )

    def latest(self) -> dict[tuple[str, str], UdpHealthView]:
        """The latest probe per (service, route), for the status."""
        return dict(self._latest)

    def adopt(self, old: UdpHealth) -> None:
        """Carry what `old` knew over a reload (for routes that still exist: unknown
        names are simply never asked for)."""
        for key, ok in old._verdicts.items():
            self._verdicts.setdefault(key, ok)
        for key, view in old._latest.items():
            self._latest.setdefault(key, view)

    def get(self, service: str | None, route: str) -> bool | None:
        return self._verdicts.get((service or "", route))

    def order(self, service: str | None, routes: Sequence[R]) -> list[R]:
        """Known to work first, then unknown, then known not to (stable within each)."""

        def rank(route: R) -> int:
            verdict = self.get(service, route.name)
            return 0 if verdict else (1 if verdict is None else 2)

        return sorted(routes, key=rank)
