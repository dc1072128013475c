"""The handshake budget: how many TLS handshakes detour starts towards one server name, and
how close together, shared by probes, strategy searches and the routes a connection races.

DPI in 2026 also counts handshakes: more than three to one server name within a short window,
or bursts closer than about 400 ms, mark a client. The budget keeps detour's own traffic
under that: per server name, at most `limit` handshake starts within `window` seconds, and
at least `gap` seconds between two starts.

Two kinds of start:

- background (probes, searches, a race's later attempts): booked at the earliest time that
  keeps both rules, one slot of `limit` left free for clients (`reserve`);
- a client connection's first attempt: never held back, but counted, so background work
  leaves room around it.

`HandshakeBudget` is the bookkeeping without I/O (a time in, a time out: tested event by
event); `take` is the one coroutine, sleeping until the booked time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["HandshakeBudget"]

EPSILON = 1e-9  # float sums (a start plus the gap) land within this of the exact time
RESERVE = 1  # starts within a window that background work leaves to client connections


class HandshakeBudget:
    """Per server name: at most `limit` starts within `window` seconds and `gap` seconds
    between starts. `limit` 0 turns the budget off."""

    def __init__(
        self,
        limit: int = 3,
        window: float = 1.0,
        gap: float = 0.4,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 0 or window < 0 or gap < 0:
            raise ValueError("a handshake budget needs a limit, window and gap of 0 or more")
        self.limit = limit
        self.window = window
        self.gap = gap
        self.clock = clock
        self._starts: dict[str, deque[float]] = {}  # name -> booked start times, in order
        self.counted = 0  # starts booked (what tests and the status show)
        self.held = 0  # starts that had to wait

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def book(self, name: str, now: float, *, urgent: bool = False) -> float:
        """Book a handshake start towards `name` and return when it may happen (>= now).
        `urgent`: a client's first attempt, always `now`."""
        self.counted += 1
        if not self.enabled:
            return now
        starts = self._starts.setdefault(name.lower(), deque())
        horizon = now - max(self.window, self.gap)
        while starts and starts[0] <= horizon:
            starts.popleft()
        at = now if urgent else self._earliest(starts, now)
        if at > now:
            self.held += 1
        self._insert(starts, at)
        return at

    def _earliest(self, starts: deque[float], now: float) -> float:
        """The first time from `now` that keeps both rules with every booked start: tried
        at `now` and at the times a rule stops binding (a start plus the gap or window)."""
        candidates = sorted(
            {now, *(s + self.gap for s in starts), *(s + self.window for s in starts)}
        )
        for at in candidates:
            if at >= now and self._fits(starts, at):
                return at
        raise AssertionError("unreachable: the last start plus the window always fits")

    def _fits(self, starts: deque[float], at: float) -> bool:
        if any(abs(s - at) < self.gap - EPSILON for s in starts):
            return False
        cap = max(1, self.limit - RESERVE)
        # Every window (t - window, t] that would hold `at`: t = at, or a later start.
        for t in (at, *(s for s in starts if at < s < at + self.window)):
            if sum(1 for s in starts if t - self.window + EPSILON < s <= t) + 1 > cap:
                return False
        return True

    @staticmethod
    def _insert(starts: deque[float], at: float) -> None:
        index = len(starts)
        while index > 0 and starts[index - 1] > at:
            index -= 1
        starts.insert(index, at)

    def starts(self, name: str) -> list[float]:
        """The starts still remembered for `name` (booked, possibly in the future)."""
        return list(self._starts.get(name.lower(), ()))

    async def take(self, name: str, *, urgent: bool = False) -> None:
        """Wait until a handshake towards `name` may start."""
        now = self.clock()
        at = self.book(name, now, urgent=urgent)
        if at > now:
            await asyncio.sleep(at - now)
