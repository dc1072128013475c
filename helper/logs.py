"""Logging set-up: readable text lines or JSON lines for machines (headless), or the terminal
UI's log buffer.

JSON lines: one object per line, with `ts` (UTC, ISO 8601 with milliseconds), `level`,
`logger`, `msg`, `exc` (a traceback, when there is one) and whatever fields the call passed in
`extra=` (e.g. a reload's `event` and `changed`), so a log collector can filter on them
without parsing sentences.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["AcceptFailures", "JsonFormatter", "setup_logging"]

# What every LogRecord carries; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # default=str: a field that is not JSON (an Endpoint, a Path) is written as text
        # rather than losing the line.
        return json.dumps(entry, ensure_ascii=False, default=str)


class AcceptFailures(logging.Filter):
    """asyncio's own event loop logs every accept() that fails for want of file descriptors,
    at ERROR with a traceback, again each time it retries (every second, for every client
    still waiting): hundreds of records a minute that say one thing. Let one through every
    `interval` seconds, as one sentence that says what to do."""

    PREFIX = "socket.accept() out of system resource"
    RETRY = "Exception in callback BaseSelectorEventLoop._start_serving("

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._last = -interval

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self.RETRY) and _closed_socket(record):
            # The loop retries a failed accept a second later even when the listener has been
            # closed meanwhile (detour stopping or draining): the retry finds no socket. Nothing
            # is wrong, so nothing is said.
            return False
        if not message.startswith(self.PREFIX):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        error = record.exc_info[1] if record.exc_info else None
        reason = getattr(error, "strerror", None) or "out of a system resource"
        record.msg = (
            "cannot accept new connections: %s (the open-file limit, ulimit -n, is too low "
            "for this many connections); open ones are unaffected"
        )
        record.args = (reason.lower(),)
        record.exc_info = None
        record.exc_text = None
        return True


def _closed_socket(record: logging.LogRecord) -> bool:
    """Whether the record's error is the selector refusing a closed socket (fd -1)."""
    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, ValueError) and str(error).endswith("file descriptor: -1")


def setup_logging(
    level: str = "info", fmt: str = "text", handler: logging.Handler | None = None
) -> None:
    """Log to stdout, or to `handler` (the terminal UI's log buffer) instead."""
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")
            )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Python's warnings become log lines too (JSON lines stay all JSON).
    logging.captureWarnings(True)
    root.setLevel(level.upper())
    # asyncio's debug chatter (peers resetting mid-write) is normal for a proxy.
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.setLevel(max(logging.WARNING, root.level))
    for old in [f for f in asyncio_log.filters if isinstance(f, AcceptFailures)]:
        asyncio_log.removeFilter(old)
    asyncio_log.addFilter(AcceptFailures())
