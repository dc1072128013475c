"""A route's verdict before its freeze check ends: every target the route carries has passed
its connect, handshake and request or first exchange, and only the freeze check (volume.py)
still runs -- the moment a route can start carrying a service on a network detour has not
seen (docs/routing.md "Health").

The freeze check moves 24 KiB and takes a second or more on a loaded machine (twice that,
and once more, when it comes out unsure); a route whose handshakes pass is used from here,
ranked as a route whose freeze check is unsure (after every route that passed it, before
routes not yet known), and the full verdict replaces this one when the check ends: a freeze
seen then fails the route as before. Sans-IO: the prober reports each target's progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .result import TargetResult

__all__ = ["CHECKING", "Passing"]

# The words of a pass whose freeze check is still under way (its diagnosis, and its
# `freeze_unsure`, which ranks it after sure passes).
CHECKING = "works so far: its freeze check is still under way"


class Passing:
    """Counts a probe's targets (`count`, in the service's order) as they pass; calls `fire`
    with copies of them once all have passed while the freeze check still runs. Once at
    most: never when a target fails (it never reports), nor once the check has ended."""

    def __init__(self, count: int, fire: Callable[[list[TargetResult]], None]) -> None:
        self.results: list[TargetResult | None] = [None] * count
        self.fire = fire
        self.checking: int | None = None  # the index of the target checking for a freeze
        self.done = False

    def passed(self, index: int, result: TargetResult, *, checking: bool = False) -> None:
        """Target `index` passed (or was skipped); `checking`: all but its freeze check,
        which starts now."""
        self.results[index] = result
        if checking:
            self.checking = index
        self._maybe()

    def checked(self) -> None:
        """The freeze check ended (either way): the full verdict follows."""
        self.checking = None

    def _maybe(self) -> None:
        if self.done or self.checking is None or any(r is None for r in self.results):
            return
        self.done = True
        copies = [
            dataclasses.replace(r, steps=list(r.steps)) for r in self.results if r is not None
        ]
        pending = copies[self.checking]
        pending.freeze_checked = False
        pending.freeze_unsure = CHECKING
        self.fire(copies)
