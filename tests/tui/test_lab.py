"""The terminal UI on a real engine probing the lab: what the matrix shows once the probes
are done matches what the scenario says for every service and route; pinning and re-probing
change what they should; a client's connection shows up live."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.config import parse_config
from helper.engine import Engine
from helper.events import ProbeStarted
from helper.lab.lab import Lab
from helper.probe.diagnose import short
from helper.tui.app import DetourApp
from helper.tui.connections import ConnectionsTable
from helper.tui.matrix import RouteMatrix
from tests.support.clients import open_socks5
from tests.support.networks import free_network
from tests.support.waiting import until
from tests.tui.screen import eventually, shows
from transports import Failure, Op

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("sni-reset", network=free_network()) as running:
        yield running


# Every timeout of the test's config: far longer than anything the lab takes, however busy
# the machine (the scenario's verdicts need none). 60 s was not: with twenty processes on two
# cores a probe through the DoH-and-fragment route took longer and said "no answer to request".
SLOW = "240s"
ROUND = 600  # a bound on one round of probes (each bounded by SLOW), for the same machine


def lab_config(lab: Lab) -> str:
    """The lab's helper config with probe and route timeouts for a busy machine: the lab
    answers at once (hence its 3 s probes), but the lab, the engine and the UI share this
    test's one event loop, and a probe that times out because the machine is busy says
    "black-holed" (or the fronted route "proxy silent") where the scenario says "reset" (or
    "works"), a lookup that times out says "DNS timeout", and a download that pauses says
    "frozen". This scenario has no verdict that needs a timeout."""
    text = lab.helper_config(listen="127.0.0.1:0")
    assert 'timeout = "3s"' in text and "\n[dns]\n" in text
    text = text.replace('timeout = "3s"', f'timeout = "{SLOW}"')
    text = text.replace("\n[dns]\n", f'\n[dns]\ntimeout = "{SLOW}"\n')
    return re.sub(r'^(chain = ".*")$', rf'\1\ntimeout = "{SLOW}"', text, flags=re.MULTILINE)


def probed(app: DetourApp) -> bool:
    """Every cell known, and the UI has drawn what it knows."""
    engine = app.engine
    cells = sum(len(engine.monitor.probe_routes(s)) for s in engine.monitor.services)
    if engine.monitor.probing or len(engine.monitor.results) < cells or app.status.probes.running:
        return False
    view = app.screen.query_one(RouteMatrix).view
    return view is not None and all(c.state != "probing" for row in view.cells for c in row)


@pytest.mark.timeout(1500)  # two rounds of probes, each bounded by ROUND on a busy machine
async def test_the_matrix_shows_what_the_scenario_says_and_the_keys_work(lab: Lab) -> None:
    engine = Engine(parse_config(lab_config(lab)))
    events = engine.events.subscribe()
    app = DetourApp(engine)  # before the engine starts, as the command line does
    await engine.start()
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await until(lambda: probed(app), ROUND)
            matrix = app.screen.query_one(RouteMatrix)

            def check(screen: str) -> None:
                for expect in lab.scenario.expectations:
                    works, failure, op = expect.expected(netns=False)
                    text = matrix.get_cell(expect.route, expect.service).plain
                    if works:
                        assert text[1:].startswith("✓ works"), (expect, text)
                    elif failure == "not_applicable":
                        assert text[1:] == "– not applicable", (expect, text)
                    else:
                        splits = engine.router.route(expect.route).chain.splits_client_hello
                        words = short(Failure(failure), Op(op), splits_client_hello=splits)
                        assert text[1:] == f"✗ {words}", (expect, text)
                for service, best in lab.scenario.best.items():
                    assert matrix.get_cell(best, service).plain.startswith("▶✓"), service
                assert screen.count("✓ via tls-fragment") == 3
                assert f"proxy 127.0.0.1:{engine.mixed_address[1]}" in screen

            await eventually(pilot, check)

            # Pin telegram to the lab's HTTP proxy: the router follows, the cell says so.
            await pilot.press(*["down"] * 7)
            assert matrix.selected == ("telegram", "lab-http")
            await pilot.press("p")
            assert engine.router.pins == {"telegram": "lab-http"}
            telegram = next(s for s in engine.router.services if s.name == "telegram")
            assert engine.router.active_route(telegram).name == "lab-http"
            assert matrix.get_cell("lab-http", "telegram").plain.startswith("◆✓")
            assert matrix.get_cell("tls-fragment", "telegram").plain.startswith(" ✓")

            # Re-probe telegram: new probes of telegram start.
            seen = []

            def telegram_probed_again() -> bool:
                while (event := events.get_nowait()) is not None:
                    seen.append(event)
                return any(isinstance(e, ProbeStarted) and e.service == "telegram" for e in seen)

            while events.get_nowait() is not None:
                pass  # the probes at start
            await pilot.press("r")
            await until(telegram_probed_again, ROUND)
            await until(lambda: probed(app), ROUND)
            assert engine.router.pins == {"telegram": "lab-http"}  # a probe keeps the pin
    finally:
        await engine.stop()


async def test_a_connection_shows_up_live(lab: Lab) -> None:
    engine = Engine(parse_config(lab_config(lab)), probe_on_start=False)
    app = DetourApp(engine)
    await engine.start()
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("c")
            table = app.screen.query_one(ConnectionsTable)
            reader, writer = await open_socks5(engine.mixed_address, "g.whatsapp.net", 5222)
            writer.write(b"x" * 5000)
            assert len(await reader.readexactly(5000)) == 5000  # the lab's echo
            # The route the race chose: direct, the first in config order, unless a busy
            # machine let the next one, started after the stagger, connect first.
            (conn,) = engine.server.connections.values()
            assert conn.route in [route.name for route in engine.router.routes]
            await until(
                lambda: table.row_count == 1
                and table.get_row_at(0)[1:6] == [
                    "g.whatsapp.net:5222", "whatsapp", conn.route, "5.0 KB", "5.0 KB"
                ]
            )  # fmt: skip
            await shows(pilot, "Connections (1)")
            writer.close()
            await until(lambda: table.row_count == 0)
    finally:
        await engine.stop()
