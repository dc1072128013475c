"""One stream of typed events -- probes, route changes, connections -- that the terminal UI,
the headless log and the status API all consume.

Publishing never blocks and never fails: a subscriber that falls behind loses its oldest
events (and is told how many), so a slow consumer can never slow the proxy down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .probe.result import ProbeResult

__all__ = [
    "ConnectionClosed",
    "ConnectionOpened",
    "DialFailed",
    "Event",
    "EventBus",
    "ProbeFinished",
    "ProbePassed",
    "ProbeStarted",
    "RouteChanged",
    "Subscription",
]


@dataclass(frozen=True)
class Event:
    at: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class ProbeStarted(Event):
    service: str
    route: str


@dataclass(frozen=True)
class ProbeFinished(Event):
    result: ProbeResult


@dataclass(frozen=True)
class ProbePassed(Event):
    """A route's probe passed all but its freeze check, which still runs: the route may
    carry the service from now on (probe/passing.py); a ProbeFinished follows."""

    result: ProbeResult


@dataclass(frozen=True)
class RouteChanged(Event):
    service: str
    old: str | None
    new: str | None  # None: no route works
    reason: str


@dataclass(frozen=True)
class ConnectionOpened(Event):
    id: int
    client: str
    target: str
    service: str | None
    route: str


@dataclass(frozen=True)
class ConnectionClosed(Event):
    id: int
    up: int
    down: int
    duration: float
    outcome: str  # closed, reset, idle timeout


@dataclass(frozen=True)
class DialFailed(Event):
    """A client connection's attempt through a route failed (to dial, or to get an answer)."""

    service: str | None
    route: str
    failure: str  # the taxonomy's failure string
    op: str


class Subscription:
    """Events for one consumer, in order; at most `limit` wait unread."""

    def __init__(self, bus: EventBus, limit: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(limit)
        self.dropped = 0  # events lost because this consumer fell behind

    def _offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.get()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, limit: int = 1000) -> Subscription:
        subscription = Subscription(self, limit)
        self._subscriptions.add(subscription)
        return subscription

    @property
    def listening(self) -> bool:
        """Whether anyone subscribed: publishers of frequent events may skip making them."""
        return bool(self._subscriptions)

    def publish(self, event: Event) -> None:
        for subscription in self._subscriptions:
            subscription._offer(event)
