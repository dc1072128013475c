"""A probe's patience: deadlines that grow with the delays measured on this machine and
network, so that a slow machine (a loaded one, a router's or a phone's CPU) does not call
working routes dead (docs/routing.md "A slow machine").

A probe target's deadline measures time: `[probe] timeout` for the whole target, the stall
time for a freeze check's silence. On a machine that is losing time, a target's steps take
longer for reasons that have nothing to do with the route. Three measurements stretch the
deadline, each bounded by `[probe] patience` (at most that many times the timeout):

- **The event loop's lag**: a cheap timer ticks every PERIOD while probes run; how late each
  tick fires beyond LAG_FLOOR is time the loop could not run (other work in this process, or
  the process not scheduled at all). The time lost during a target's run is added to its
  deadline, and taken off a freeze check's silence: a silence while the loop could not read
  is no silence of the route.
- **The target's own progress**: once its completed steps have taken `done` seconds (a
  connect through a slow path), the target may take PROGRESS x `done` in all -- a route
  whose dial took 4 s of a 5 s timeout gets the time for its next exchange.
- **The steps other targets completed**: the median of the last SAMPLES successful connects
  and TLS handshakes, times NET_STEPS (the steps of a probe), is the least time a target
  gets -- on a network (or machine) where a connect takes 2 s, 5 s is not a probe's time.

The freeze check's silence grows with the third measurement too (`quiet`): where other
targets' connects take a second, a server's pause of two is no freeze.

The same measure, in the context while a target runs (transports.deadlines.machine), makes
the timeouts inside its dial grow with the loop time lost (transports/deadlines.py's
`patient`: a resolver's lookup, the route's timeout for its whole chain), and a route's turn
in a probe pass (turns.py).

On a quiet machine and network none of them stretches anything (no tick is LAG_FLOOR late,
steps take a fraction of the timeout): the deadlines are the configured ones. A target that
timed out while the loop lagged by more than LAGGED of its timeout is probed once more
before its verdict stands (probe.py): its timeout says more about the machine than about
the route.

The meter (`LagMeter`) and the arithmetic (`allowed`, `median`) are sans-IO; `Patience` runs
the meter's timer while any target runs, and `Deadline` enforces one target's deadline,
re-reckoned when it falls due.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Iterable

from transports.deadlines import Growing, LostTime, machine

__all__ = [
    "LAGGED",
    "LAG_FLOOR",
    "MAX_PATIENCE",
    "NET_STEPS",
    "PERIOD",
    "PROGRESS",
    "SAMPLES",
    "Deadline",
    "LagMeter",
    "Patience",
    "allowed",
    "median",
    "quiet",
]

PERIOD = 0.1  # seconds between the meter's ticks, while probes run
# A tick this late or less counts nothing: a quiet machine's timers are a few ms late, and
# its deadlines must stay the configured ones.
LAG_FLOOR = 0.02
PROGRESS = 2.0  # a target whose steps so far took T may take PROGRESS x T in all
NET_STEPS = 4.0  # a target may take NET_STEPS x the median step that other targets completed
SAMPLES = 16  # the successful steps that median is taken over
LAGGED = 0.1  # a timeout after the loop lost this share of the timeout: probe once more
MAX_PATIENCE = 3.0  # the default bound: at most this many times the configured deadline


def allowed(
    base: float,
    *,
    lost: float = 0.0,
    done: float = 0.0,
    typical: float = 0.0,
    patience: float = MAX_PATIENCE,
) -> float:
    """The seconds a target whose configured deadline is `base` may take in all, given the
    loop time `lost` during its run, the seconds its completed steps took (`done`) and the
    median step of other targets (`typical`): never less than `base`, never more than
    `patience` x `base`."""
    wanted = max(base + lost, PROGRESS * done, NET_STEPS * typical)
    return max(base, min(wanted, patience * base))


def quiet(base: float, *, typical: float = 0.0, patience: float = MAX_PATIENCE) -> float:
    """The silence that makes a freeze, for a configured stall of `base` seconds, given the
    median step other targets completed (`typical`): NET_STEPS x that step where it is
    longer -- where a connect takes 2 s, a 2 s pause of the server is no freeze -- never less
    than `base`, never more than `patience` x `base`."""
    return max(base, min(NET_STEPS * typical, patience * base))


def median(values: Iterable[float]) -> float:
    """The median of `values` (0.0 for none)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


class LagMeter:
    """The event loop's lost time, sans-IO: `tick(now)` at each tick, which was due at
    `due`; `lost` is the sum, over ticks, of each one's lateness beyond LAG_FLOOR."""

    def __init__(self, period: float = PERIOD, floor: float = LAG_FLOOR) -> None:
        self.period = period
        self.floor = floor
        self.lost = 0.0
        self.due: float | None = None  # when the next tick is due (None: not running)

    def start(self, now: float) -> float:
        """Start ticking at `now`; returns when the first tick is due."""
        self.due = now + self.period
        return self.due

    def tick(self, now: float) -> float:
        """A tick ran at `now`; returns when the next one is due."""
        if self.due is not None:
            self.lost += self._late(now)
        self.due = now + self.period
        return self.due

    def stop(self, now: float) -> None:
        self.lost = self.lost_at(now)
        self.due = None

    def lost_at(self, now: float) -> float:
        """The time lost up to `now`, the tick that is overdue now included (a loop blocked
        right now has not run that tick yet)."""
        return self.lost + (self._late(now) if self.due is not None else 0.0)

    def _late(self, now: float) -> float:
        assert self.due is not None
        return max(0.0, now - self.due - self.floor)


class Patience:
    """One prober's measurements: the loop's lag (its timer runs while any target runs) and
    the recent successful steps. `patience`: the bound, times the configured deadline (1:
    deadlines never stretch)."""

    def __init__(self, patience: float = MAX_PATIENCE) -> None:
        self.patience = patience
        self.meter = LagMeter()
        self.steps: deque[float] = deque(maxlen=SAMPLES)
        self._users = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return self.patience > 1.0

    def most(self, base: float) -> float:
        """The longest a deadline of `base` seconds can become."""
        return max(1.0, self.patience) * base

    def step(self, seconds: float) -> None:
        """A connect or TLS handshake of a probe completed in `seconds`."""
        self.steps.append(seconds)

    def typical(self) -> float:
        return median(self.steps)

    def silence(self, stall: float) -> float:
        """The silence that makes a freeze now, for a configured `stall` (`quiet`)."""
        if not self.enabled:
            return stall
        return quiet(stall, typical=self.typical(), patience=self.patience)

    def lost(self) -> float:
        """The loop time lost so far (a mark to subtract from later)."""
        if self._loop is None:
            return self.meter.lost
        return self.meter.lost_at(self._loop.time())

    def acquire(self) -> None:
        """A target starts: the meter ticks while any runs."""
        self._users += 1
        if self._users == 1 and self.enabled:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_at(self.meter.start(self._loop.time()), self._tick)

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._loop is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.meter.stop(self._loop.time())
            self._loop = None

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_at(self.meter.tick(self._loop.time()), self._tick)

    def deadline(self, base: float, done: Callable[[], float] = lambda: 0.0) -> Deadline:
        """A deadline of `base` seconds for one target; `done` says how long its completed
        steps took so far."""
        return Deadline(self, base, done)


class Deadline(Growing):
    """One target's deadline, as an async context manager around its work: an asyncio
    timeout due after `base` seconds, reckoned again (`allowed`) just before it falls due
    and moved when the measurements say so (transports/deadlines.py's Growing); the work is
    cancelled (a TimeoutError out of the context) when the deadline, stretched or not, has
    passed. While it runs, the prober's measure is the context's (transports.deadlines.
    machine), so the timeouts inside the target's dial grow with the loop time lost too."""

    def __init__(self, patience: Patience, base: float, done: Callable[[], float]) -> None:
        super().__init__(base)
        self.patience = patience
        self.done = done
        self.mark = 0.0  # the loop time lost before the target started
        self._token: contextvars.Token[LostTime | None] | None = None

    def grows(self) -> bool:
        return self.patience.enabled

    def lost(self) -> float:
        """The loop time lost since the target started."""
        return max(0.0, self.patience.lost() - self.mark)

    def total(self) -> float:
        """The seconds the target may take in all, as measured now."""
        if not self.patience.enabled:
            return self.base
        return allowed(
            self.base,
            lost=self.lost(),
            done=self.done(),
            typical=self.patience.typical(),
            patience=self.patience.patience,
        )

    @property
    def end(self) -> float:
        """When the target's time is up, as measured now (the loop's clock)."""
        return self.start + self.total()

    async def __aenter__(self) -> Deadline:
        self.patience.acquire()
        self.mark = self.patience.lost()
        if self.patience.enabled:
            self._token = machine.set(self.patience)
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        if self._token is not None:
            machine.reset(self._token)
            self._token = None
        self.patience.release()
        return await super().__aexit__(*exc)
