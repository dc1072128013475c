"""The Textual app: a front end on a running Engine. It subscribes to the engine's events,
and on one timer (4 Hz) drains them and redraws the main screen from the engine's state, so
a burst of probes or a busy relay costs at most four redraws a second."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from ..events import ProbeFinished, ProbeStarted, RouteChanged
from .appsetup import ProxySettings, proxy_settings
from .help_screen import HelpScreen
from .log_screen import LogScreen
from .logbuffer import LogBuffer
from .main_screen import BY_THE_USER, MainScreen
from .model import ProbeProgress
from .setup_screen import SetupScreen

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["DetourApp"]

log = logging.getLogger("detour.tui")

# Reads the config file again and switches new connections to it: (in use?, one line).
Reloader = Callable[[], Awaitable[tuple[bool, str]]]

REFRESH = 0.25
# Events wait here between two refreshes; should a connection storm overflow it, the probe
# progress is checked against the monitor's own view (ProbeProgress.settle).
EVENT_BACKLOG = 10_000


class DetourApp(App[int]):
    CSS_PATH = "detour.tcss"
    TITLE = "detour"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("question_mark", "help", "help"),
        Binding("s", "setup", "apps"),
        Binding("l", "log", "log"),
        Binding("ctrl+r", "reload", "reload config", show=False),
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        log_buffer: LogBuffer | None = None,
        title: str | None = None,
        notes: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        addresses: Callable[[], list[str]] | None = None,
        reload: Reloader | None = None,
    ) -> None:
        """`notes` are extra lines for the setup screen (the demo's lab CA and curl line);
        `reload` re-reads the config file (none: detour runs with the built-in config);
        `clock`, `monotonic` and `addresses` are for tests that need fixed output."""
        super().__init__()
        self.reloader = reload
        self.engine = engine
        self.log_buffer = log_buffer or LogBuffer()
        if title is not None:
            self.title = title
        self.notes = list(notes)
        self.clock = clock
        self.monotonic = monotonic
        self.progress = ProbeProgress()
        # Subscribed before the engine starts (the CLI builds the app first), so the first
        # round of probes is seen from its start.
        self._events = engine.events.subscribe(EVENT_BACKLOG)
        self._addresses = addresses

    @property
    def proxy(self) -> ProxySettings:
        """Where applications reach detour (the configured address until it listens)."""
        listener = self.engine.listener
        if listener.sockets:
            host, port = listener.sockets[0]
        else:
            host, port = listener.address.host, listener.address.port
        kwargs = {"addresses": self._addresses} if self._addresses is not None else {}
        return proxy_settings(host, port, self.engine.config.listen.users, **kwargs)

    def on_mount(self) -> None:
        main = MainScreen()
        self.push_screen(main)
        # The main screen owns the timer, so it stops before the screen is taken apart.
        main.set_interval(REFRESH, self.tick)

    def on_unmount(self) -> None:
        self._events.close()

    def tick(self) -> None:
        try:
            self._drain()
            self.main_screen.refresh_view()
        except Exception:
            # A bug in drawing must not take the proxy down with the screen: log it (the log
            # view shows it) and keep going.
            log.exception("the terminal UI failed to redraw")

    @property
    def main_screen(self) -> MainScreen:
        return next(s for s in self.screen_stack if isinstance(s, MainScreen))

    def _drain(self) -> None:
        while (event := self._events.get_nowait()) is not None:
            if isinstance(event, ProbeStarted):
                self.progress.start(event.service, event.route)
            elif isinstance(event, ProbeFinished):
                self.progress.finish(event.result.service, event.result.route)
            elif (
                isinstance(event, RouteChanged)
                and event.old is not None
                and not event.reason.endswith(BY_THE_USER)
            ):
                if event.new is None:
                    self.notify(
                        f"{event.service}: no route works any more ({event.reason})",
                        severity="warning",
                    )
                else:
                    self.notify(f"{event.service}: now via {event.new} ({event.reason})")
        monitor = self.engine.monitor
        self.progress.settle(
            {
                s.name: [r.name for r in monitor.probe_routes(s)]
                for s in monitor.services
                if s.name in monitor.probing
            }
        )

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_setup(self) -> None:
        if not isinstance(self.screen, SetupScreen):
            self.push_screen(SetupScreen())

    def action_log(self) -> None:
        if not isinstance(self.screen, LogScreen):
            self.push_screen(LogScreen())

    def action_reload(self) -> None:
        """Ctrl-R (or SIGUSR1): the config file again, as the headless runner does on SIGHUP.
        Established connections keep their routes; new ones take the new config."""
        if self.reloader is None:
            self.notify("running with the built-in config: there is no file to reload")
            return
        self.run_worker(self._reload(self.reloader), group="reload", exclusive=True)

    async def _reload(self, reloader: Reloader) -> None:
        ok, line = await reloader()
        self.notify(line, severity="information" if ok else "error", timeout=8)
