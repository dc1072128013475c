"""The terminal UI: a Textual front end on a running Engine (the headless runner is the other).

Importing this package does not import Textual, so the router build and `detour run
--headless` never load it; `run` does, when a UI is wanted.

    app.py          the App: subscribes to the engine's events, redraws on a 4 Hz timer
    main_screen.py  status line, routes x services matrix, details / live connections
    matrix.py details.py connections.py   the main screen's widgets
    setup_screen.py appsetup.py           pointing apps at detour; Telegram link and QR code
    log_screen.py logbuffer.py            the log, kept in a bounded buffer while the UI runs
    help_screen.py                        keys and marks
    model.py        what the widgets show, computed from the engine without any UI code
    detour.tcss     styles
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine import Engine
    from .logbuffer import LogBuffer

__all__ = ["build_app", "run_until_stopped"]


def build_app(
    engine: Engine,
    *,
    log_buffer: LogBuffer | None = None,
    title: str | None = None,
    notes: Sequence[str] = (),
    reload: Any = None,
):
    """The app for `engine`: build it before starting the engine (it subscribes to the
    engine's events, and should see the first probes), then `await app.run_async()`.
    `reload`: an async callable that reads the config file again (ctrl+r, SIGHUP)."""
    from .app import DetourApp

    return DetourApp(engine, log_buffer=log_buffer, title=title, notes=notes, reload=reload)


async def run_until_stopped(app: Any, stop: asyncio.Event) -> None:
    """Run the UI until the user quits it, or `stop` is set (Ctrl-C, SIGTERM from outside)."""
    stopper = asyncio.ensure_future(stop.wait())
    stopper.add_done_callback(lambda task: task.cancelled() or app.exit())
    try:
        await app.run_async()
    finally:
        stopper.cancel()
