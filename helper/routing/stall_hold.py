"""How long a live freeze outweighs passing probes (sans-IO: keys and times in, verdicts out).
docs/routing.md "Frozen connections". The freeze watch itself is progress.py; health.py keeps
the verdicts. (Its own module so that health.py needs nothing of the proxy's side.)"""

from __future__ import annotations

__all__ = ["STALL_HOLD", "UNCHECKED_HOLD", "StallHold"]

# A route live connections froze stays failing until a probe passes the freeze check with no
# live freeze through it for this long (StallHold); a probe that could not check for a freeze
# needs UNCHECKED_HOLD.
STALL_HOLD = 120.0
UNCHECKED_HOLD = 600.0


class StallHold:
    """Hysteresis for the live-stall verdict (sans-IO: keys and times in, verdicts out).

    A probe moves its bytes once; live connections keep freezing while the route is in use.
    Were the next passing probe to make a route that live connections froze "working" again,
    connections would go back to it, freeze, flip it to failing, and so on at every probe
    interval. So a route marked stalled by live traffic (`stalled`) takes a passing probe's
    verdict only when the probe passed the freeze check (`freeze_checked`) *and* no live
    connection froze through it for `hold` seconds before it; a probe that could not check for
    a freeze (its server's answers were too short to show one) needs `unchecked_hold`. Each
    new live freeze starts the wait again. Keys are (service, route)."""

    def __init__(self, hold: float = STALL_HOLD, unchecked_hold: float = UNCHECKED_HOLD) -> None:
        self.hold = hold
        self.unchecked_hold = max(hold, unchecked_hold)
        self._last: dict[tuple[str, str], float] = {}  # the last live freeze, monotonic

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._last

    def stalled(self, key: tuple[str, str], now: float) -> None:
        """A live connection through the route froze at `now`."""
        self._last[key] = now

    def probe_passed(self, key: tuple[str, str], freeze_checked: bool, now: float) -> str:
        """A probe of the route passed at `now`. "" when its verdict may stand (the route is
        no longer held); otherwise why the stall verdict stays."""
        last = self._last.get(key)
        if last is None:
            return ""
        need = self.hold if freeze_checked else self.unchecked_hold
        quiet = now - last
        if quiet >= need:
            del self._last[key]
            return ""
        why = "" if freeze_checked else " and could not check for a freeze"
        return (
            f"a probe passed{why}, but a live connection froze {quiet:.0f}s ago "
            f"(held until {need:.0f}s without one)"
        )

    def forget(self, route: str) -> None:
        """Drop what is held for `route`, for every service."""
        for key in [key for key in self._last if key[1] == route]:
            del self._last[key]
