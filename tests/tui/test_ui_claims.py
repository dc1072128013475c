"""What the terminal UI claims agrees with what detour does: no sentence says a feature is
missing or for a later version, the set-up screen's PAC URL is one the status API serves
(the URL shown, fetched), and with the API off the screen says how to turn it on."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from helper.tui.app import DetourApp
from helper.tui.setup_screen import SetupScreen
from tests.conftest import config_text
from tests.tui.screen import shows

TUI = Path(__file__).resolve().parents[2] / "helper" / "tui"
SIZE = (160, 40)

# Words that say a feature does not exist (yet). A feature that is missing is better left
# unmentioned than promised; one that exists must be described, not denied.
MISSING = re.compile(
    r"not in this version|coming soon|not (?:yet )?(?:implemented|supported|available)"
    r"|(?:in|with) a (?:later|future) version|not available yet|not supported yet",
    re.IGNORECASE,
)


def test_no_ui_string_says_a_feature_is_missing() -> None:
    found = [
        f"{path.relative_to(TUI.parent.parent)}:{number}: {line.strip()}"
        for path in sorted(TUI.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if MISSING.search(line)
    ]
    assert not found, "UI strings that deny a feature:\n" + "\n".join(found)


@pytest.mark.parametrize("sentence", ["A PAC file comes with the status API (not in this version)"])
def test_the_scan_catches_the_old_sentence(sentence: str) -> None:
    assert MISSING.search(sentence)


async def _get(host: str, port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    try:
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


SERVICE = """
[[service]]
name = "telegram"
domains = ["telegram.org"]
"""


async def test_the_pac_url_shown_is_served(start_engine) -> None:
    engine = await start_engine(
        config_text(extra=SERVICE + '[api]\nlisten = "127.0.0.1:0"\n'), probe_on_start=False
    )
    host, port = engine.api.address
    url = f"http://{host}:{port}/proxy.pac"
    app = DetourApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, SetupScreen)
        text = await shows(pilot, url)
        assert "turn on the status API" not in text
        await pilot.press("q")
    status, body = await _get(host, port, "/proxy.pac")
    assert status == 200
    assert b"function FindProxyForURL" in body and b"telegram.org" in body


async def test_with_the_api_off_the_screen_says_how_to_turn_it_on(start_engine) -> None:
    engine = await start_engine(config_text(extra=SERVICE), probe_on_start=False)
    app = DetourApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await shows(pilot, "turn on the status API", '[api] listen = "127.0.0.1:9080"')
        await pilot.press("q")
