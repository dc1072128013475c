"""Noticing that the terminal under the UI went away.

A terminal goes away when its window is closed, an ssh session drops or `tmux kill-session`
runs. The kernel then sends SIGHUP to the foreground process group, and from then on every
read of the terminal fails (EIO) or returns nothing. A UI that keeps running after that has
nobody to show anything to, keeps the proxy port bound and spins on the dead terminal, so
detour ends instead: `TerminalWatch` calls `gone()` on SIGHUP, and also when the terminal
stops answering `tcgetattr` (EIO or EBADF), which catches a hang-up whose signal went to
another process group (detour started from a script, or under `make`).

Reloading the config under the UI is ctrl+r or SIGUSR1 (a signal a hang-up never sends);
headless runs keep SIGHUP for reload, as daemons do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import IO

log = logging.getLogger("detour.tui")

POLL_INTERVAL = 0.5  # seconds between checks of the terminal


def terminal_fds() -> list[int]:
    """The standard streams that are terminals now (the ones a hang-up would kill)."""
    fds = []
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError, ValueError):
            if os.isatty(fd):
                fds.append(fd)
    return fds


def terminal_alive(fds: list[int]) -> bool:
    """False once any of `fds` no longer behaves as a terminal (hung up or closed)."""
    if sys.platform == "win32":  # pragma: no cover - no termios there
        return True
    import termios

    for fd in fds:
        try:
            termios.tcgetattr(fd)
        except (termios.error, OSError):
            return False
    return True


class _SurvivesHangUp:
    """The terminal stream Textual draws on (it takes `sys.__stderr__`), made to swallow the
    EIO a hung-up terminal gives: Textual writes from a thread of its own, which dies on the
    first failed write, after which its queue fills and the UI's shutdown blocks for ever.
    Once a write has failed, later ones are dropped (nobody can see them)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.dead = False

    def write(self, text: str) -> int:
        if not self.dead:
            try:
                return self._stream.write(text)
            except OSError:
                self.dead = True
        return len(text)

    def flush(self) -> None:
        if not self.dead:
            try:
                self._stream.flush()
            except OSError:
                self.dead = True

    def __getattr__(self, name: str) -> object:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


class TerminalWatch:
    """Calls `gone` once when the terminal goes away: on SIGHUP, or when a terminal the
    process had at start stops answering. Use as an async context manager in the running
    loop; `went_away` says afterwards whether it fired."""

    def __init__(
        self,
        gone: Callable[[], object],
        *,
        interval: float = POLL_INTERVAL,
        fds: list[int] | None = None,
    ) -> None:
        self._gone = gone
        self._interval = interval
        self._fds = terminal_fds() if fds is None else fds
        self._task: asyncio.Task[None] | None = None
        self._signal = False
        self._stderr: IO[str] | None = None
        self._safe: _SurvivesHangUp | None = None
        self.went_away = False

    async def __aenter__(self) -> TerminalWatch:
        loop = asyncio.get_running_loop()
        self._stderr = sys.__stderr__
        if self._stderr is not None and 2 in self._fds:
            self._safe = _SurvivesHangUp(self._stderr)
            sys.__stderr__ = self._safe  # type: ignore[misc] # read when the app starts
        if hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self._fire, "hang-up signal")
                self._signal = True
        if self._fds:
            self._task = loop.create_task(self._poll(), name="detour-terminal-watch")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._safe is not None:
            sys.__stderr__ = self._stderr  # type: ignore[misc]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._signal:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not terminal_alive(self._fds):
                self._fire("the terminal stopped answering")
                return

    def _fire(self, why: str) -> None:
        if self.went_away:
            return
        self.went_away = True
        if self._safe is not None:
            self._safe.dead = True
        log.info("the terminal went away (%s): stopping", why)
        self._gone()
