"""detour's log while the terminal UI owns the screen: lines go into a bounded buffer (no
stdout, which would tear the screen), and the log view reads what is new a few times a
second. No Textual here: the handler is installed before the engine starts, so the first
lines (the listener's address) are kept too."""

from __future__ import annotations

import logging
import threading
from collections import deque

__all__ = ["LogBuffer"]


class _OneLineFormatter(logging.Formatter):
    """An error's exception as one line ("ValueError: ..."): the screen shows no traceback;
    `detour run --headless` logs them in full."""

    def formatException(self, ei) -> str:
        exc = ei[1]
        return f"  ({type(exc).__name__}: {exc})" if exc is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\n", " ")


class LogBuffer(logging.Handler):
    """The last `limit` log lines, each with a sequence number so readers fetch what is
    new. Handlers may be called from any thread; the lock keeps the deque consistent."""

    def __init__(self, limit: int = 2000, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(_OneLineFormatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
        self._lines: deque[tuple[int, int, str]] = deque(maxlen=limit)
        self._next = 0
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._lock_lines:
            self._lines.append((self._next, record.levelno, line))
            self._next += 1

    def since(self, seq: int) -> list[tuple[int, int, str]]:
        """(sequence, level, line) for every kept line numbered `seq` or later."""
        with self._lock_lines:
            return [entry for entry in self._lines if entry[0] >= seq]

    @property
    def next_seq(self) -> int:
        return self._next
