"""The terminal UI: a Textual front end on a running Engine (the headless runner is the other).

Importing this package does not import Textual, so the router build and `detour run
--headless` never load it; `run` does, when a UI is wanted.

    app.py          the App: subscribes to the engine's events, redraws on a 4 Hz timer
    main_screen.py  status line, routes x services matrix, details / live connections
    matrix.py details.py connections.py   the main screen's widgets
    setup_screen.py appsetup.py           pointing apps at detour; Telegram link and QR code
    terminal.py     noticing that the terminal went away (hang-up), so detour ends with it
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
    config_path: str | None = None,
):
    """The app for `engine`: build it before starting the engine (it subscribes to the
    engine's events, and should see the first probes), then `await app.run_async()`.
    `reload`: an async callable that reads the config file again (ctrl+r, SIGUSR1)."""
    from .app import DetourApp

    return DetourApp(
        engine,
        log_buffer=log_buffer,
        title=title,
        notes=notes,
        reload=reload,
        config_path=config_path,
    )


async def run_until_stopped(app: Any, stop: asyncio.Event) -> bool:
    """Run the UI until the user quits it, `stop` is set (Ctrl-C, SIGTERM from outside) or
    the terminal goes away (hang-up: see terminal.py). True when the terminal went away: the
    caller then lets connections drain, since nobody is there to see them cut."""
    from .terminal import TerminalWatch

    gone = asyncio.Event()
    running = asyncio.ensure_future(app.run_async())
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(gone.wait())]
    async with TerminalWatch(gone.set) as watch:
        try:
            await asyncio.wait([running, *waits], return_when=asyncio.FIRST_COMPLETED)
            await _end(app, running)
        finally:
            for task in waits:
                task.cancel()
            if not running.done():
                running.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        try:
            await running
        except OSError:
            # Textual restoring a terminal that is no longer there (EIO): nothing to restore.
            if not watch.went_away:
                raise
        except asyncio.CancelledError:
            if not running.cancelled():
                raise
    return watch.went_away


async def _end(app: Any, running: asyncio.Future[Any]) -> None:
    """Ask the app to exit until it has: an app still starting up can miss one exit(). After
    EXIT_PATIENCE seconds it is cancelled (a UI that cannot draw must not keep detour up)."""
    deadline = asyncio.get_running_loop().time() + EXIT_PATIENCE
    while not running.done():
        app.exit()
        await asyncio.wait([running], timeout=0.25)
        if asyncio.get_running_loop().time() > deadline:
            running.cancel()
            await asyncio.wait([running])


EXIT_PATIENCE = 3.0  # seconds an app may take to exit once asked
