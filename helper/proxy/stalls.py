"""The freeze checks of every relaying client connection, on one timer.

A connection whose server stops mid-record counts against its route once it has been
frozen for `[probe] stall_timeout` (routing/progress.py says when). Each connection used to
check its own ProgressWatch every half timeout, on a timer of its own, with its relay in a
task of its own so that `stall_close` could cancel just the relay: a task and a timer made
and freed per connection, for a check that fires for almost none of them. Here the watches
of all connections share one timer that ticks every half timeout while any is watched; it
is not cancelled when the last one leaves (it finds nothing and stops), so sequential
connections do not arm and disarm it each time.

    stalls = StallWatches(on_stall)
    stalls.add(key, watch, item, loop)   # the relay starts
    ...                                  # on_stall(item, watch) once, if it freezes
    stalls.discard(key)                  # the relay ended
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ..routing.progress import ProgressWatch

__all__ = ["StallWatches"]

log = logging.getLogger("detour.proxy")

T = TypeVar("T")


class StallWatches(Generic[T]):
    """Watched connections by key, each with its ProgressWatch and what `on_stall` is told
    of it; checked every half of the shortest timeout among them."""

    def __init__(self, on_stall: Callable[[T, ProgressWatch], None]) -> None:
        self._on_stall = on_stall
        self._watched: dict[Hashable, tuple[ProgressWatch, T]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._period = 0.0

    def __len__(self) -> int:
        return len(self._watched)

    def add(
        self, key: Hashable, watch: ProgressWatch, item: T, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._watched[key] = (watch, item)
        period = watch.timeout / 2
        if self._timer is not None and self._loop is loop and period >= self._period:
            return  # ticking often enough already
        if self._timer is not None:
            self._timer.cancel()  # a shorter timeout (a reload), or a new loop (tests)
        self._loop, self._period = loop, period
        self._timer = loop.call_later(period, self._tick)

    def discard(self, key: Hashable) -> None:
        self._watched.pop(key, None)

    def _tick(self) -> None:
        self._timer = None
        if not self._watched:
            return
        assert self._loop is not None
        now = self._loop.time()
        for key, (watch, item) in list(self._watched.items()):
            if watch.check(now) is not None:
                # Told once; the connection is not checked again (it stays open unless
                # stall_close, and a route fails for it only once).
                del self._watched[key]
                try:
                    self._on_stall(item, watch)
                except Exception:  # one connection's trouble must not stop the others' checks
                    log.exception("stall of connection %s: internal error", key)
        if self._watched:
            self._period = min(watch.timeout for watch, _ in self._watched.values()) / 2
            self._timer = self._loop.call_later(self._period, self._tick)
