"""The terminal UI when the network is down: the status line says so, and every service and
cell shows "offline" instead of a diagnosis (docs/using-the-tui.md); when the network is
back, the diagnoses return."""

from __future__ import annotations

import pytest

from helper.status import NetworkView
from tests.tui.scenes import fixed_app, scene
from tests.tui.screen import eventually, shows

SIZE = (140, 30)
DOWN = NetworkView("offline", "no route to the internet (not connected?)", 1.0)


@pytest.fixture
async def engine():
    engine = scene("sni-reset")
    yield engine
    await engine.stop()


async def test_offline_replaces_the_diagnoses_and_comes_back(engine) -> None:
    engine.network.state = DOWN
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        text = await shows(pilot, "○ offline: no route to the internet", "○ offline")
        assert "reset after ClientHello" not in text
        assert "no route works" not in text
        engine.network.state = NetworkView("online", "a control target answered", 2.0)

        def diagnoses_again(text: str) -> None:
            assert "reset after ClientHello" in text and "○ offline" not in text

        await eventually(pilot, diagnoses_again)
        await pilot.press("q")
