"""`a` in the terminal UI: paste a link, see what it is with its secret hidden, confirm, and
the route is in the config file and in the running router (the file read again); a bad
link gets its one-line error and nothing is written; escape leaves the file alone."""

from __future__ import annotations

import base64
from pathlib import Path

from textual.widgets import Input

from helper.headless import reload_config
from helper.tui.add_screen import AddScreen
from helper.tui.app import DetourApp
from helper.tui.main_screen import MainScreen
from tests.conftest import config_text
from tests.tui.screen import shows

SIZE = (120, 36)
SECRET = "TOPSECRETpw"
LINK = (
    "ss://"
    + base64.urlsafe_b64encode(f"aes-256-gcm:{SECRET}".encode()).decode().rstrip("=")
    + "@203.0.113.9:8388#Home"
)
TEXT = config_text(extra='[probe]\ninterval = "1h"\n') + "# my own comment\n"


async def _app(start_engine, tmp_path: Path) -> tuple[DetourApp, Path]:
    path = tmp_path / "detour.toml"
    path.write_text(TEXT)
    engine = await start_engine(TEXT, probe_on_start=False)
    app = DetourApp(
        engine,
        reload=lambda: reload_config(engine, str(path), None),
        config_path=str(path),
    )
    return app, path


async def _paste(pilot, text: str) -> None:
    field = pilot.app.screen.query_one("#add-link", Input)
    field.value = text  # a paste arrives at once
    await pilot.press("enter")


async def test_a_pasted_link_is_shown_confirmed_added_and_used(start_engine, tmp_path) -> None:
    app, path = await _app(start_engine, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        assert isinstance(app.screen, AddScreen)
        await _paste(pilot, LINK)
        text = await shows(pilot, "ss://aes-256-gcm:***@203.0.113.9:8388")
        assert SECRET not in text and 'name = "Home"' in text
        assert path.read_text() == TEXT  # nothing yet: it waits for the confirmation
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert path.read_text().startswith(TEXT) and LINK in path.read_text()
        for _ in range(200):
            if "Home" in [r.name for r in app.engine.router.routes]:
                break
            await pilot.pause(0.05)
        assert [r.name for r in app.engine.router.routes] == ["direct", "Home"]


async def test_a_bad_link_says_why_and_writes_nothing(start_engine, tmp_path) -> None:
    app, path = await _app(start_engine, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await _paste(pilot, "ss://YWVzLTk5OS1nY206cHc@example.com:1")
        await shows(pilot, "unknown cipher")
        await _paste(pilot, "tg://proxy?server=x.example&port=443&secret=dd00")
        text = await shows(pilot, "is no proxy secret")
        assert "dd00" not in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
    assert path.read_text() == TEXT


async def test_a_name_of_ones_own_and_a_taken_name(start_engine, tmp_path) -> None:
    app, path = await _app(start_engine, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        app.screen.query_one("#add-name", Input).value = "direct"
        await _paste(pilot, LINK)
        await shows(pilot, "'direct' exists already")
        app.screen.query_one("#add-name", Input).value = "vps"
        await _paste(pilot, LINK)
        await shows(pilot, 'name = "vps"')
        await pilot.press("enter")
        await pilot.pause()
    assert 'name = "vps"' in path.read_text()


async def test_without_a_config_file_it_says_how(start_engine) -> None:
    engine = await start_engine(TEXT, probe_on_start=False)
    app = DetourApp(engine)
    said: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **kw: said.append(message)  # type: ignore[method-assign]
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
    assert any("start detour with -c FILE" in line for line in said)
