"""Timeouts for many connections at once, on one timer.

`asyncio.timeout()` arms a timer of its own for every use, which on a busy listener costs
as much as the rest of a connection's handshake (a timer handle made and freed, and several
event loop lookups). detour bounds each client connection's handshake, its wait for the
client's first bytes and its route's dial; those deadlines need not be exact to the
millisecond, so they share one timer that ticks while any of them is pending and cancels the
tasks whose deadline has passed. Inside the block the effect is asyncio.timeout's: the task is
cancelled at the deadline and the cancellation leaves the block as TimeoutError (a
cancellation from elsewhere stays a cancellation); `expired()` says which it was.

    deadlines = Deadlines()
    with deadlines.after(2.0):       # in a task; a plain `with` (no await to enter or
        await handshake()             # leave), or `async with` in asyncio.timeout's place:
                                      # TimeoutError once 2 s (to within one tick) have passed

No sockets here: tested with plain tasks.

**Timeouts that grow with the time the machine lost.** A probe measures how late the event
loop runs (helper/probe/patience.py): on a loaded machine, a router's or a phone's CPU, a
step's time says more about the machine than about the route. While a probe target runs, its
measure is in the context (`machine`), and the timeouts of the steps inside its dial -- a
resolver's lookup, the route's timeout for the whole chain -- come from `patient(seconds)`: a
timeout due after `seconds`, reckoned again just before it falls due and moved by the loop
time lost since it started, up to `patience` times `seconds` (`stretched`). Without a measure
in the context (a client's connection, a quiet machine's probe: nothing lost), it is the plain
asyncio timeout it replaces, due when it always was.

    async with patient(5.0):          # TimeoutError after 5 s, or 5 s + the loop time lost
        await lookup()                # meanwhile (at most `patience` x 5 s) inside a probe
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Protocol

__all__ = [
    "Deadline",
    "Deadlines",
    "Growing",
    "LostTime",
    "Patient",
    "PatientDeadlines",
    "machine",
    "patient",
    "stretched",
]

TICK = 0.1  # seconds: how late a deadline may be noticed
AHEAD = 0.001  # a growing timeout is reckoned again this long before it falls due


class Deadline:
    """One task's deadline, while its `with` block runs."""

    __slots__ = ("_cancelling", "_expired", "_owner", "task", "when")

    def __init__(self, owner: Deadlines, when: float) -> None:
        self._owner = owner
        self.when = when
        self.task: asyncio.Task | None = None
        self._expired = False
        self._cancelling = 0

    def expired(self) -> bool:
        """Whether the deadline passed (and cancelled the task)."""
        return self._expired

    def __enter__(self) -> Deadline:
        task = asyncio.current_task(self._owner.loop)
        if task is None:
            raise RuntimeError("a deadline bounds a task: use it inside one")
        self.task = task
        self._cancelling = task.cancelling()
        self._owner._add(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb) -> None:
        self._owner._pending.pop(self, None)
        if self._expired and kind is asyncio.CancelledError:
            assert self.task is not None
            if self.task.uncancel() <= self._cancelling:
                raise TimeoutError from exc

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(self, kind, exc, tb) -> None:
        self.__exit__(kind, exc, tb)


class Deadlines:
    """The deadlines of many tasks, checked every `tick` seconds by one timer that runs only
    while some deadline is pending."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[Deadline, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            # The first use, or a new loop (tests run one after another): start afresh.
            self._loop = asyncio.get_running_loop()
            self._pending.clear()
            self._timer = None
        return self._loop

    def after(self, seconds: float) -> Deadline:
        """A deadline `seconds` from now, for a `with` block."""
        return Deadline(self, self.loop.time() + seconds)

    def _add(self, deadline: Deadline) -> None:
        self._pending[deadline] = None
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self._check)

    def _check(self) -> None:
        self._timer = None
        now = self.loop.time()
        for deadline in [d for d in self._pending if d.when <= now]:
            del self._pending[deadline]
            deadline._expired = True
            assert deadline.task is not None
            deadline.task.cancel()
        if self._pending:
            self._timer = self.loop.call_later(self.tick, self._check)


# --- timeouts that grow with the time the machine lost ------------------------------------


class LostTime(Protocol):
    """A measure of the time the event loop lost (helper/probe/patience.py's Patience)."""

    @property
    def patience(self) -> float:
        """A timeout grows to at most this many times its length (1: never)."""
        ...

    def lost(self) -> float:
        """The loop time lost so far: a running sum, to take differences of."""
        ...


# The measure of the probe target this task works for (None: a timeout is what it says).
machine: contextvars.ContextVar[LostTime | None] = contextvars.ContextVar("machine", default=None)


def stretched(base: float, lost: float, patience: float) -> float:
    """The seconds a timeout of `base` may last after the loop lost `lost` seconds while it
    ran: `base` + `lost`, never less than `base`, never more than `patience` x `base`."""
    return max(base, min(base + lost, patience * base))


class Growing:
    """An asyncio timeout of `base` seconds, as an async context manager, that may grow: due
    as configured (the loop's own timer: without growth it fires as it always did), and
    reckoned again (`total()`, seconds from the start) just before it falls due -- moved
    when the measurements say so. The work is cancelled (a TimeoutError out of the block)
    once the timeout, moved or not, has passed. Subclasses say what `total()` measures."""

    def __init__(self, base: float) -> None:
        self.base = base
        self.start = 0.0
        self.stretched = False  # the timeout was moved past `base`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Timeout | None = None
        self._handle: asyncio.TimerHandle | None = None

    def grows(self) -> bool:
        """Whether `total()` can be more than `base` at all (else no reckoning is armed)."""
        return True

    def total(self) -> float:
        return self.base

    def expired(self) -> bool:
        """Whether the timeout passed (and cancelled the work)."""
        return self._timeout is not None and self._timeout.expired()

    async def __aenter__(self) -> Growing:
        self._loop = asyncio.get_running_loop()
        self.start = self._loop.time()
        self._timeout = asyncio.timeout_at(self.start + self.base)
        await self._timeout.__aenter__()
        if self.grows():
            # Just before the loop's own timeout: first, when a blocked loop finds both due.
            self._handle = self._loop.call_at(self.start + self.base - AHEAD, self._due)
        return self

    def _due(self) -> None:
        assert self._loop is not None and self._timeout is not None
        self._handle = None
        end = self.start + self.total()
        if end > (self._timeout.when() or 0.0):
            self.stretched = True
            self._timeout.reschedule(end)
            self._handle = self._loop.call_at(end - AHEAD, self._due)

    async def __aexit__(self, *exc: object) -> bool | None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        assert self._timeout is not None
        return await self._timeout.__aexit__(*exc)  # type: ignore[arg-type]


class Patient(Growing):
    """A timeout of `base` seconds that grows by the loop time `source` measured lost while
    it ran (`stretched`)."""

    def __init__(self, base: float, source: LostTime) -> None:
        super().__init__(base)
        self.source = source
        self.mark = 0.0  # the loop time lost before it started

    def grows(self) -> bool:
        return self.source.patience > 1.0

    def lost(self) -> float:
        """The loop time lost since it started."""
        return max(0.0, self.source.lost() - self.mark)

    def total(self) -> float:
        return stretched(self.base, self.lost(), self.source.patience)

    async def __aenter__(self) -> Patient:
        self.mark = self.source.lost()
        await super().__aenter__()
        return self


def patient(seconds: float) -> Patient | asyncio.Timeout:
    """A timeout of `seconds` for an `async with` block: one that grows with the loop time
    lost (Patient) when a probe's measure is in the context (`machine`), else asyncio's."""
    source = machine.get()
    if source is None or source.patience <= 1.0:
        return asyncio.timeout(seconds)
    return Patient(seconds, source)


class PatientDeadlines:
    """`after(seconds)` is `patient(seconds)`: given to Route.dial in Deadlines' place, the
    route's timeout for its whole chain grows with the loop time lost, as the probe's own
    deadline does."""

    def after(self, seconds: float) -> Patient | asyncio.Timeout:
        return patient(seconds)
