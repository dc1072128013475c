"""UDP health, kept apart from TCP health (health.py): a network can pass a route's TCP and
drop its UDP, so a service's calls may need another route than its chats. The verdicts come
from UDP probes (helper/probe/udp.py); a listener's UDP associations (helper/proxy/udp.py)
try routes whose UDP is known to work first and routes whose UDP was seen dropped last."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from .health import _Named

__all__ = ["UdpHealth"]

R = TypeVar("R", bound=_Named)


class UdpHealth:
    """The last UDP verdict per (service, route): True works, False dropped or not carried;
    none for a route never probed."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], bool] = {}

    def record(self, service: str | None, route: str, ok: bool) -> None:
        self._verdicts[(service or "", route)] = ok

    def get(self, service: str | None, route: str) -> bool | None:
        return self._verdicts.get((service or "", route))

    def order(self, service: str | None, routes: Sequence[R]) -> list[R]:
        """Known to work first, then unknown, then known not to (stable within each)."""

        def rank(route: R) -> int:
            verdict = self.get(service, route.name)
            return 0 if verdict else (1 if verdict is None else 2)

        return sorted(routes, key=rank)
