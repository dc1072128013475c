"""The handshake budget: how many TLS handshakes detour starts towards one server name, and
how close together, shared by probes, strategy searches and the routes a connection races.

DPI in 2026 also counts handshakes: more than three to one server name within a short window,
or bursts closer than about 400 ms, mark a client. The budget keeps detour's own traffic
under that: per server name, at most `limit` handshake starts within `window` seconds, and
at least `gap` seconds between two starts.

Three kinds of start, so that background work never makes a connection slower:

- a client connection's first route (`first`): never held back, but counted;
- the later routes of a client's race (`client`): held only by starts that have happened
  (never behind background work booked for later), with the whole `limit`;
- background work (probes, searches): booked at the earliest time that keeps both rules
  with every other start, one start of each window left to clients (`RESERVE`). A client
  start that lands next to a booked background start pushes that one later.

`HandshakeBudget.book` is the bookkeeping without I/O (a time in, a booking out: tested
event by event); `take` is the one coroutine, sleeping until the booked time (which a client
start may move while it sleeps).

`handshake` is for a handshake whose end detour sees (the fronted tunnel's TLS to its front,
transports/fronted/client.py): besides the start times, at most `limit` such handshakes to one
name are under way at once (TCP connect included), however long each takes; its start is
taken after the connect, just before the ClientHello goes out, so the times a censor counts
are the ones kept (a connect that took longer does not bunch hellos together). A front's
handshakes are all paced (a connection's first route included): without multiplexing every
connection is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

__all__ = ["Booking", "HandshakeBudget"]

EPSILON = 1e-9  # float sums (a start plus the gap) land within this of the exact time
RESERVE = 1  # starts within a window that background work leaves to client connections


@dataclass(eq=False)
class Booking:
    at: float  # when the handshake may start
    background: bool


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
        self._starts: dict[str, list[Booking]] = {}  # name -> bookings, by time
        self.counted = 0  # starts booked
        self.held = 0  # starts that had to wait
        self._under_way: Counter[str] = Counter()  # name -> handshakes started, not ended
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}  # name -> for a slot

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def book(self, name: str, now: float, *, client: bool = False, first: bool = False) -> Booking:
        """Book a handshake start towards `name`; the booking says when it may happen
        (>= now). `first`: a client's first route (at once); `client`: a later route of a
        client's race; neither: background work."""
        self.counted += 1
        if not self.enabled:
            return Booking(now, not (client or first))
        starts = self._prune(name, now)
        if first:
            booking = Booking(now, False)
        elif client:
            happened = [b.at for b in starts if not b.background or b.at <= now]
            booking = Booking(self._earliest(happened, now, self.limit), False)
        else:
            cap = max(1, self.limit - RESERVE)
            booking = Booking(self._earliest([b.at for b in starts], now, cap), True)
        if booking.at > now:
            self.held += 1
        self._insert(starts, booking)
        if not booking.background:
            self._push_back(starts, now)
        return booking

    def _prune(self, name: str, now: float) -> list[Booking]:
        starts = self._starts.setdefault(name.lower(), [])
        horizon = now - max(self.window, self.gap)
        # Kept in order of `at` (_insert): the expired ones are a prefix.
        expired = 0
        while expired < len(starts) and starts[expired].at <= horizon:
            expired += 1
        del starts[:expired]
        return starts

    def _push_back(self, starts: list[Booking], now: float) -> None:
        """Background starts booked for later that a client start now crowds move later."""
        cap = max(1, self.limit - RESERVE)
        later = []  # the background starts after `now`: at the end, `starts` being in order
        for booking in reversed(starts):
            if booking.at <= now:
                break
            if booking.background:
                later.append(booking)
        for booking in reversed(later):
            others = [b.at for b in starts if b is not booking]
            if not self._fits(others, booking.at, cap):
                starts.remove(booking)
                booking.at = self._earliest(others, booking.at, cap)
                self._insert(starts, booking)

    def _earliest(self, starts: list[float], now: float, cap: int) -> float:
        """The first time from `now` that keeps both rules with `starts`: tried at `now` and
        at the times a rule stops binding (a start plus the gap or the window)."""
        candidates = sorted(
            {now, *(s + self.gap for s in starts), *(s + self.window for s in starts)}
        )
        for at in candidates:
            if at >= now and self._fits(starts, at, cap):
                return at
        raise AssertionError("unreachable: the last start plus the window always fits")

    def _fits(self, starts: Iterable[float], at: float, cap: int) -> bool:
        starts = list(starts)
        if any(abs(s - at) < self.gap - EPSILON for s in starts):
            return False
        # Every window (t - window, t] that would hold `at`: t = at, or a later start.
        for t in (at, *(s for s in starts if at < s < at + self.window)):
            if sum(1 for s in starts if t - self.window + EPSILON < s <= t) + 1 > cap:
                return False
        return True

    @staticmethod
    def _insert(starts: list[Booking], booking: Booking) -> None:
        index = len(starts)
        while index > 0 and starts[index - 1].at > booking.at:
            index -= 1
        starts.insert(index, booking)

    def starts(self, name: str) -> list[float]:
        """The starts remembered for `name` (booked, possibly in the future)."""
        return [b.at for b in self._starts.get(name.lower(), ())]

    async def take(self, name: str, *, client: bool = False, first: bool = False) -> None:
        """Wait until a handshake towards `name` may start."""
        booking = self.book(name, self.clock(), client=client, first=first)
        while True:
            delay = booking.at - self.clock()
            if delay <= 0:
                return
            await asyncio.sleep(delay)  # a client start may have moved the booking later

    @contextlib.asynccontextmanager
    async def handshake(self, name: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """Hold a handshake towards `name` for as long as the block runs: it is entered when
        fewer than `limit` are under way to that name. The block awaits what it is given just
        before its ClientHello goes out: that waits until the start times allow (as a race's
        later route: never behind background work booked for later)."""
        key = name.lower()
        while self.enabled and self._under_way[key] >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.get(key, []).remove(waiter)
        self._under_way[key] += 1
        try:
            yield functools.partial(self.take, name, client=True)
        finally:
            self._under_way[key] -= 1
            if not self._under_way[key]:
                del self._under_way[key]
            for waiter in self._waiting.pop(key, []):  # each looks again
                if not waiter.done():
                    waiter.set_result(None)

    def under_way(self, name: str) -> int:
        """Handshakes towards `name` held by `handshake` now."""
        return self._under_way[name.lower()]
