"""detour's log, as the headless mode would print it: the lines the log buffer kept, then new
ones as they come (read a few times a second, not one message per line)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

if TYPE_CHECKING:
    from .front import Front

__all__ = ["LogScreen"]

REFRESH = 0.25
KEEP = 2000  # lines in the view, as many as the buffer keeps


class LogScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's declaration style
        Binding("escape,l", "app.pop_screen", "back"),
    ]

    app: Front  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self._seq = 0

    def compose(self) -> ComposeResult:
        yield Static("Log", id="log-title")
        yield RichLog(id="log", max_lines=KEEP, wrap=True, markup=False, highlight=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.pull()
        self.set_interval(REFRESH, self.pull)

    def pull(self) -> None:
        view = self.query_one(RichLog)
        for seq, level, line in self.app.log_buffer.since(self._seq):
            view.write(Text(line, style=_style(level)))
            self._seq = seq + 1


def _style(level: int) -> str:
    if level >= logging.ERROR:
        return "bold red"
    return "yellow" if level >= logging.WARNING else ""
