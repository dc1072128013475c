"""The Textual app: a front end on a running Engine. On one timer (4 Hz) it takes a status
snapshot of the engine (helper/status.py) and redraws the main screen from it, and tells the
user about route changes it did not make (the engine's RouteChanged events), so a burst of
probes or a busy relay costs at most four redraws a second."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from ..events import RouteChanged
from ..proxy.mtproto_links import ProxyLink, proxy_links
from ..routing.router import BY_THE_USER
from .appsetup import ProxySettings, proxy_settings
from .help_screen import HelpScreen
from .log_screen import LogScreen
from .logbuffer import LogBuffer
from .main_screen import MainScreen
from .setup_screen import SetupScreen

if TYPE_CHECKING:
    from ..engine import Engine
    from ..status import Snapshot

__all__ = ["DetourApp"]

log = logging.getLogger("detour.tui")

# Reads the config file again and switches new connections to it: (in use?, one line).
Reloader = Callable[[], Awaitable[tuple[bool, str]]]

REFRESH = 0.25
# Events wait here between two refreshes (only route changes are read; the oldest are lost
# should a storm of other events overflow it).
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
        Binding("a", "add", "add a link", show=False),
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
        config_path: str | None = None,
    ) -> None:
        """`notes` are extra lines for the setup screen (the demo's lab CA and curl line);
        `reload` re-reads the config file (none: detour runs with the built-in config);
        `clock`, `monotonic` and `addresses` are for tests that need fixed output."""
        super().__init__()
        self.reloader = reload
        self.config_path = config_path  # the file `a` adds routes to (None: built-in)
        self.engine = engine
        self.log_buffer = log_buffer or LogBuffer()
        if title is not None:
            self.title = title
        self.notes = list(notes)
        self.clock = clock
        self.monotonic = monotonic
        # Subscribed before the engine starts (the CLI builds the app first), so the first
        # route changes are seen.
        self._events = engine.events.subscribe(EVENT_BACKLOG)
        self._addresses = addresses
        self._status = engine.snapshot()

    @property
    def status(self) -> Snapshot:
        """The latest status snapshot (taken on the timer, and after each command)."""
        return self._status

    def take_snapshot(self) -> Snapshot:
        self._status = self.engine.snapshot()
        return self._status

    @property
    def proxy(self) -> ProxySettings:
        """Where applications reach detour (the configured address until it listens)."""
        mixed = self._status.listening("mixed")
        if mixed:
            host, port = mixed[0].host, mixed[0].port
        else:
            configured = self.engine.listener.address
            host, port = configured.host, configured.port
        kwargs = {"addresses": self._addresses} if self._addresses is not None else {}
        return proxy_settings(host, port, self.engine.config.listen.users, **kwargs)

    @property
    def mtproto_links(self) -> list[ProxyLink]:
        """The MTProto proxy endpoint's links ([mtproto_proxy]), one per user; none when off."""
        config = self.engine.config.mtproto_proxy
        if config is None:
            return []
        running = getattr(self.engine, "mtproto", None)
        bound = running.address_bound if running is not None else None
        kwargs = {}
        if self._addresses is not None:
            found = self._addresses()
            kwargs["lan_address"] = lambda: found[0] if found else None
        return proxy_links(config, bound, **kwargs)

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
            self.take_snapshot()
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
            if (
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

    def action_add(self) -> None:
        """`a`: paste a link; once confirmed it is a route in the config file, and the file
        is read again (helper/tui/add_screen.py)."""
        from .add_screen import AddScreen

        if self.config_path is None:
            self.notify(
                "running with the built-in config: start detour with -c FILE to add routes "
                "to that file (or use detour add -c FILE LINK)",
                severity="warning",
            )
            return
        if isinstance(self.screen, AddScreen):
            return

        def added(done: bool | None) -> None:
            if done:
                self.action_reload()

        self.push_screen(AddScreen(self.config_path), added)

    async def _reload(self, reloader: Reloader) -> None:
        ok, line = await reloader()
        self.notify(line, severity="information" if ok else "error", timeout=8)
