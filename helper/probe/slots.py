"""A service's probe slots: how many of its targets are probed at once (probe.py)."""

from __future__ import annotations

import asyncio

__all__ = ["SLOT_HOLD", "Slot"]

# A target still resolving or connecting this long after it took its probe slot (a connect
# to a black-holed address: no SYN-ACK) gives the slot up: waiting for a SYN-ACK is no work,
# and the routes after a dead one in the order must not wait for its timeouts (docs/routing.md
# "Health"). Later steps keep their slot: a slow TLS handshake or exchange is work, and a
# path that is merely slow must not get more flows at once.
SLOT_HOLD = 1.0
_WAITING = frozenset({"resolve", "connect"})


class Slot:
    """One of a service's probe slots, held while a target works; given up after SLOT_HOLD
    while the target is still in a step of `_WAITING` (`step` says which runs now)."""

    def __init__(self, slots: asyncio.Semaphore, step: list[str]) -> None:
        self.slots = slots
        self.step = step
        self.held = False
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        await self.slots.acquire()
        self.held = True
        self._timer = asyncio.get_running_loop().call_later(SLOT_HOLD, self._check)

    def _check(self) -> None:
        if self.step[0] in _WAITING:
            self._release()

    def _release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._release()
