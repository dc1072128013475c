"""The help screen's legend says what every mark in the matrix can mean (the same as the
table in docs/using-the-tui.md)."""

from __future__ import annotations

from rich.console import Console

from helper.tui import model
from helper.tui.help_screen import HelpScreen


def rendered() -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(HelpScreen._text())
    return " ".join(console.export_text().split())


def test_the_dash_mark_names_every_case_the_matrix_shows_it_for() -> None:
    text = rendered()
    line = text[text.index(f"{model.OFF} ") :]
    assert line.startswith(f"{model.OFF} disabled by you, not one of the service's routes")
    assert "or not applicable: the route cannot carry the service" in line
