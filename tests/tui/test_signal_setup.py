"""The set-up screen's Signal section: with `[signal_proxy]` on, the signal.tube link, a QR
code of it, and the address to type into the app's proxy setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.ca import LabCA
from helper.tui.appsetup import qr_rows
from helper.tui.setup_screen import SetupScreen
from tests.tui.scenes import fixed_app, lab_config
from tests.tui.screen import shows

SIZE = (120, 200)


@pytest.fixture
async def engine(tmp_path: Path):
    cert, key = LabCA(tmp_path).issue("signal.home.example")
    section = f'[signal_proxy]\nlisten = "127.0.0.1:443"\ncertificate = "{cert}"\nkey = "{key}"\n'
    signal = parse_config(
        f'[[route]]\nname = "direct"\nchain = "direct"\n{section}', "signal section"
    ).signal_proxy
    engine = Engine(dataclasses.replace(lab_config(), signal_proxy=signal), probe_on_start=False)
    yield engine
    await engine.stop()


async def test_the_signal_link_and_its_qr_code(engine: Engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, SetupScreen)
        text = await shows(
            pilot,
            "https://signal.tube/#signal.home.example",
            "Use proxy, address signal.home.example.",
        )
        first_row = qr_rows("https://signal.tube/#signal.home.example")[1].strip()
        assert first_row in text  # its QR code, beside Telegram's


async def test_no_signal_section_without_the_proxy(tmp_path: Path) -> None:
    engine = Engine(lab_config(), probe_on_start=False)
    try:
        app = fixed_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            text = await shows(pilot, "Browsers")
            assert "signal.tube" not in text
    finally:
        await engine.stop()
