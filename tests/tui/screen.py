"""The text of an app's screen, read from its SVG screenshot (the public way to see what
Textual drew): one string per terminal line, cell by cell."""

from __future__ import annotations

import asyncio
import html
import re

from helper.tui.app import REFRESH

__all__ = ["settled_screenshot", "settled_text", "svg_text"]

CHAR_WIDTH = 12.2  # Rich's SVG export: 0.61 x its 20 px font, per terminal cell

_TEXT = re.compile(
    r'<text class="[^"]*" x="(?P<x>[0-9.]+)" y="[0-9.]+" textLength="[0-9.]+" '
    r'clip-path="url\(#[^)]*-line-(?P<line>\d+)\)">(?P<text>[^<]*)</text>'
)


def svg_text(svg: str, width: int, height: int) -> str:
    lines = [[" "] * width for _ in range(height)]
    for match in _TEXT.finditer(svg):
        row = int(match["line"])
        column = round(float(match["x"]) / CHAR_WIDTH)
        # Rich writes spaces as no-break spaces, so SVG keeps them.
        text = html.unescape(match["text"]).replace("\xa0", " ")
        for offset, char in enumerate(text):
            if row < height and column + offset < width:
                lines[row][column + offset] = char
    return "\n".join("".join(line).rstrip() for line in lines)


async def settled_text(pilot) -> str:
    """The screen's text once it stopped changing (see settled_screenshot)."""
    width, height = pilot.app.size
    return svg_text(await settled_screenshot(pilot), width, height)


async def settled_screenshot(pilot, title: str | None = None, timeout: float = 10) -> str:
    """The SVG screenshot once the screen stopped changing: widgets such as DataTable size
    their columns when the app is idle, so a busy machine can catch a frame in between. Two
    frames compared are more than one UI refresh apart, so a redraw due at the next tick
    cannot fall between two equal frames unseen."""
    app = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    previous = app.export_screenshot(title=title)
    while True:
        await pilot.pause(REFRESH + 0.05)
        current = app.export_screenshot(title=title)
        if current == previous or loop.time() > deadline:
            return current
        previous = current
