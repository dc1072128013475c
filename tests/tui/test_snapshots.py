"""Screenshots of the main screen for two lab scenarios, compared with the SVGs committed in
snapshots/ (open them in a browser to review a change).

The words and the layout (the screen's text, cell by cell) must match always. The SVG must
match byte for byte when the installed Textual is the one that made the snapshots: another
Textual may draw the same screen in other colours, which is not detour's regression. The test
waits until the screen shows what the snapshot shows (a busy machine may catch Textual
between a refresh and the layout it does when idle), and fails with the difference if it
never does. After an intended change: DETOUR_UPDATE_SNAPSHOTS=1, review the new SVGs, commit
them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import textual

from tests.tui.scenes import fixed_app, scene
from tests.tui.screen import eventually, settled_screenshot, svg_text

SNAPSHOTS = Path(__file__).parent / "snapshots"
VERSION_FILE = SNAPSHOTS / "TEXTUAL_VERSION"
UPDATE = os.environ.get("DETOUR_UPDATE_SNAPSHOTS") == "1"


async def screenshot(scenario: str, size: tuple[int, int], expected: str | None, **kwargs) -> str:
    """The screen of `scenario` as an SVG, once its text is `expected`'s (the last one seen if
    it never is); with no `expected` (writing snapshots), once it stopped changing."""
    engine = scene(scenario, **kwargs)
    title = f"detour · {scenario}"
    try:
        app = fixed_app(engine)
        async with app.run_test(size=size) as pilot:
            if expected is None:
                await pilot.pause(0.3)  # past the first refresh
                return await settled_screenshot(pilot, title=title)
            same_style = VERSION_FILE.read_text().strip() == textual.__version__

            def matches(text: str) -> None:
                assert text == svg_text(expected, *size)
                if same_style:
                    assert app.export_screenshot(title=title) == expected

            try:
                await eventually(pilot, matches)
            except AssertionError:
                pass  # the caller compares, and says what differs
            return app.export_screenshot(title=title)
    finally:
        await engine.stop()


@pytest.mark.parametrize(
    ("name", "scenario", "size", "options"),
    [
        ("main-sni-reset", "sni-reset", (100, 30), {"connections": 3}),
        ("main-allow-list-80x24", "allow-list", (80, 24), {"probing": ("whatsapp",)}),
    ],
)
async def test_main_screen(name: str, scenario: str, size: tuple[int, int], options: dict) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    svg = await screenshot(scenario, size, None if UPDATE else path.read_text(), **options)
    if UPDATE:
        path.write_text(svg)
        VERSION_FILE.write_text(textual.__version__ + "\n")
    expected = path.read_text()
    assert svg_text(svg, *size) == svg_text(expected, *size)
    if VERSION_FILE.read_text().strip() == textual.__version__:
        assert svg == expected, f"{path.name} differs in style; DETOUR_UPDATE_SNAPSHOTS=1 to review"
