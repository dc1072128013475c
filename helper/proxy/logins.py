"""Login back-off: wrong passwords from one client address slow that address down.

A LAN device (or anyone who reaches a listener with `listen.users`) could otherwise try
passwords as fast as it can open connections: hundreds a second. The back-off is per client
address, and it spaces the logins that address may have checked, not its connections:

- The first FREE_FAILURES logins from an address are checked at once (people mistype).
- After that, until a right one, the address's logins are checked one at a time, each no
  sooner than an interval after the one before: FIRST_WAIT after the FREE_FAILURES-th,
  doubling with each further one up to LONGEST_WAIT. A login counts from when its turn is
  given, so logins sent at once (many connections in parallel) each take the next turn:
  parallel connections gain nothing.
- A login whose turn is further away than the connection can wait (`patience`: half its
  handshake timeout) is refused at once, as a wrong one, without its password being checked,
  and does not count as a failure (a flood does not lengthen its own wait).
- A right login clears the address's record; so do FORGET_AFTER seconds without a login.
  At most MAX_CLIENTS addresses are remembered (the least recently active go first), so a
  flood from many addresses costs bounded memory.

Bookkeeping only, on an injected clock: the rules are tested as plain functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FIRST_WAIT", "FREE_FAILURES", "LONGEST_WAIT", "LoginBackoff"]

FREE_FAILURES = 5
FIRST_WAIT = 1.0
LONGEST_WAIT = 60.0
FORGET_AFTER = 15 * 60.0
MAX_CLIENTS = 4096


@dataclass
class _Record:
    checked: int = 0  # logins checked (or being checked) since the last right one
    last: float = 0.0  # when one was last checked or failed: the record is forgotten after
    next_turn: float = 0.0  # when the next login from this address may be checked


class LoginBackoff:
    """Per client address: logins checked since the last right one, and when the next may
    be. A login counts from when its turn is given (not when it fails), so logins sent in
    parallel are spaced like logins sent one after another."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        free: int = FREE_FAILURES,
        first: float = FIRST_WAIT,
        longest: float = LONGEST_WAIT,
        forget_after: float = FORGET_AFTER,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.clock = clock
        self.free = free
        self.first = first
        self.longest = longest
        self.forget_after = forget_after
        self.max_clients = max_clients
        self._records: dict[str, _Record] = {}
        self.refused = 0  # logins refused unchecked, since start (for the tests and metrics)

    def interval(self, checked: int) -> float:
        """The time between checked logins of an address once `checked` were."""
        if checked < self.free:
            return 0.0
        return min(self.first * 2.0 ** (checked - self.free), self.longest)

    def _record(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last >= self.forget_after:
            del self._records[key]
            return None
        return record

    def turn(self, key: str, patience: float) -> float | None:
        """Reserve the next turn of `key`'s logins: the seconds to wait before checking the
        login now at hand (0: at once), or None to refuse it unchecked (its turn is more
        than `patience` seconds away; it does not count)."""
        now = self.clock()
        record = self._record(key, now)
        if record is None:
            record = _Record(next_turn=now)
        start = max(now, record.next_turn)
        if start - now > patience:
            self.refused += 1
            return None
        self._records.pop(key, None)  # (re-)inserted last: the order is by last activity
        record.checked += 1
        record.last = now
        record.next_turn = start + self.interval(record.checked)
        self._records[key] = record
        while len(self._records) > self.max_clients:
            del self._records[next(iter(self._records))]
        return start - now

    def failed(self, key: str) -> float:
        """The login of `key` whose turn was given was wrong; returns how long the next one
        from `key` will wait."""
        now = self.clock()
        record = self._record(key, now)
        if record is None:
            return 0.0
        record.last = now
        return max(0.0, record.next_turn - now)

    def succeeded(self, key: str) -> None:
        """A login from `key` was right: its record goes."""
        self._records.pop(key, None)

    def checked(self, key: str) -> int:
        record = self._record(key, self.clock())
        return record.checked if record is not None else 0

    def __len__(self) -> int:
        return len(self._records)
