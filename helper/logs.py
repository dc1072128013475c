"""Logging set-up: readable text lines or JSON lines for machines (headless), or the terminal
UI's log buffer."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["setup_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
    root.setLevel(level.upper())
    # asyncio's debug chatter (peers resetting mid-write) is normal for a proxy.
    logging.getLogger("asyncio").setLevel(max(logging.WARNING, root.level))
