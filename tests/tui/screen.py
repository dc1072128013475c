"""The text of an app's screen, read from its SVG screenshot (the public way to see what
Textual drew): one string per terminal line, cell by cell.

Tests wait for the state they assert, never for the screen to look quiet: `eventually` runs a
check (plain asserts) against fresh screenshots until it passes, and fails with the check's
own last failure when it never does. Textual lays some widgets out when it is idle (a
DataTable sizes its columns then), so on a busy machine a screenshot can catch a frame in
between; a check that waits for what it asserts cannot be fooled by one.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable

from helper.tui.app import REFRESH

__all__ = ["eventually", "screen_text", "settled_screenshot", "shows", "svg_text"]

CHAR_WIDTH = 12.2  # Rich's SVG export: 0.61 x its 20 px font, per terminal cell
# A safety net for a machine far busier than any test expects, not a measurement (a check
# passes as soon as the screen shows its state; twenty processes on two cores made a frame
# take seconds).
TIMEOUT = 120.0
POLL = 0.05

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


def screen_text(pilot) -> str:
    """What the screen shows now."""
    width, height = pilot.app.size
    return svg_text(pilot.app.export_screenshot(), width, height)


async def eventually(pilot, check: Callable[[str], object], timeout: float = TIMEOUT) -> str:
    """The screen's text once `check(text)` passes (it asserts what the test expects);
    raises the check's last AssertionError if it never does within `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await pilot.pause()  # let the app handle what is pending (and lay out, when idle)
        text = screen_text(pilot)
        try:
            check(text)
        except AssertionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(POLL)
        else:
            return text


async def shows(pilot, *fragments: str, timeout: float = TIMEOUT) -> str:
    """The screen's text once it contains every one of `fragments`."""

    def check(text: str) -> None:
        for fragment in fragments:
            assert fragment in text, f"{fragment!r} not on the screen:\n{text}"

    return await eventually(pilot, check, timeout)


async def settled_screenshot(pilot, title: str | None = None, timeout: float = 10) -> str:
    """The SVG screenshot once two frames more than one UI refresh apart are equal. Only for
    writing new snapshots (DETOUR_UPDATE_SNAPSHOTS=1, on a quiet machine, then reviewed):
    comparing against a snapshot waits for the snapshot's text instead."""
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
