"""A service's probe slots: how many of its targets are probed at once (probe.py)."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .result import TargetResult

__all__ = ["HOLD_FLOOR", "HOLD_RTTS", "SLOT_HOLD", "Slot", "hold_for"]

# A target still resolving or connecting this long after it took its probe slot (a connect
# to a black-holed address: no SYN-ACK) gives the slot up: waiting for a SYN-ACK is no work,
# and the routes after a dead one in the order must not wait for its timeouts (docs/routing.md
# "Health"). Later steps keep their slot: a slow TLS handshake or exchange is work, and a
# path that is merely slow must not get more flows at once.
SLOT_HOLD = 1.0
# Once a connect of the service's probe has succeeded, the hold is HOLD_RTTS times the
# fastest one seen (a round trip on this network, and the machine's own delay), at least
# HOLD_FLOOR and at most SLOT_HOLD: on a network whose connects take 100 ms, a connect that
# has had no answer after 0.4 s is waiting for a SYN-ACK that is not coming (or for a
# retransmission), and a route after a black-holed one gets its slot that much sooner.
HOLD_RTTS = 4
HOLD_FLOOR = 0.3
POLL = 0.1  # how often a slot in a waiting step looks again (the hold can shrink meanwhile)
_WAITING = frozenset({"resolve", "connect"})
# Per pool of slots (a service's semaphore): the fastest connect seen through it, seconds.
_FASTEST: weakref.WeakKeyDictionary[asyncio.Semaphore, float] = weakref.WeakKeyDictionary()


def hold_for(fastest: float | None) -> float:
    """How long a target may wait in resolve/connect before it gives its slot up, given the
    fastest connect seen (seconds; None: none yet)."""
    if fastest is None:
        return SLOT_HOLD
    return min(SLOT_HOLD, max(HOLD_FLOOR, HOLD_RTTS * fastest))


class Slot:
    """One of a service's probe slots, held while a target works; given up after the hold
    (hold_for) while the target is still in a step of `_WAITING` (`step` says which runs
    now). `result`: the target's, whose successful connect teaches the pool its hold."""

    def __init__(
        self, slots: asyncio.Semaphore, step: list[str], result: TargetResult | None = None
    ) -> None:
        self.slots = slots
        self.step = step
        self.result = result
        self.held = False
        self._taken = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        await self.slots.acquire()
        self.held = True
        loop = asyncio.get_running_loop()
        self._taken = loop.time()
        self._timer = loop.call_later(min(POLL, self._hold()), self._check)

    def _hold(self) -> float:
        return hold_for(_FASTEST.get(self.slots))

    def _check(self) -> None:
        self._timer = None
        if not self.held or self.step[0] not in _WAITING:
            self._learn()
            return
        waited = asyncio.get_running_loop().time() - self._taken
        hold = self._hold()
        if waited >= hold:
            self._release()
            return
        self._timer = asyncio.get_running_loop().call_later(min(POLL, hold - waited), self._check)

    def _learn(self) -> None:
        if self.result is None:
            return
        for step in self.result.steps:
            if step.name == "connect" and step.ok:
                seconds = step.ms / 1000
                fastest = _FASTEST.get(self.slots)
                if fastest is None or seconds < fastest:
                    _FASTEST[self.slots] = seconds
                return

    def _release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._learn()
        self._release()
