"""The text of an app's screen, read from its SVG screenshot (the public way to see what
Textual drew): one string per terminal line, cell by cell."""

from __future__ import annotations

import html
import re

__all__ = ["screen_text", "svg_text"]

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


def screen_text(app) -> str:
    width, height = app.size
    return svg_text(app.export_screenshot(), width, height)
