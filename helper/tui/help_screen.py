"""The keys, and what the marks and words in the matrix mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from . import model

__all__ = ["HelpScreen"]

KEYS = (
    ("↑ ↓ ← →", "move between routes (rows) and services (columns)"),
    ("enter", "show the cell's details: probe steps, timings, the diagnosis, the chain"),
    ("r", "probe the selected service again, through every route"),
    ("R", "probe every service again"),
    ("p", "pin the selected route for the service (its only route), or unpin it"),
    ("d", "disable the selected route for every service, or enable it"),
    ("f", "find a strategy for the selected service: search the evasions that need no server"),
    ("c", "switch between details and live connections"),
    ("s", "set up your apps: proxy address, Telegram link and QR code"),
    ("l", "the log"),
    ("a", "add a route: paste a link (ss://, vless://, tg://socks, ...), see it, confirm"),
    ("ctrl+r", "read the config file again (so does SIGUSR1): new connections use it"),
    ("?", "this help"),
    ("q", "quit (connections in progress are closed)"),
)

MARKS = (
    (model.WORKS, "the route works for the service (time to connect and finish TLS)"),
    (model.FAILS, "it fails, and the words say why (details: the full diagnosis)"),
    (model.NOT_TRIED, "not tried yet"),
    (model.PROBING, "a probe is running"),
    (
        model.OFF,
        "disabled by you, not one of the service's routes, or not applicable: the route "
        "cannot carry the service (tgws carries only Telegram's data centres)",
    ),
    (model.ACTIVE, "the route new connections of the service take first"),
    (model.PINNED, "pinned by you: the only route the service takes"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("escape,question_mark", "app.pop_screen", "close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self._text())

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "Help (escape closes)"

    @staticmethod
    def _text() -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, style="bold")
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        table.add_row("", "")
        for mark, what in MARKS:
            table.add_row(mark, what)
        table.add_row("", "")
        table.add_row(
            "",
            Text(
                "What each failure means and what helps: docs/routing.md, "
                "“What the diagnoses mean”; this screen: docs/using-the-tui.md.",
                style="dim",
            ),
        )
        return table
