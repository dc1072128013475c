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
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadline", "Deadlines"]

TICK = 0.1  # seconds: how late a deadline may be noticed


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
