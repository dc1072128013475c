"""The terminal UI driven by its keys (Textual's pilot) on fixed scenes: the matrix, pinning,
disabling, re-probing, details, live connections, the setup screen and its secret, the log,
help, quitting, and an 80x24 terminal."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from textual.widgets import RichLog, TabbedContent

from helper.config import User, parse_config
from helper.engine import Engine
from helper.events import RouteChanged
from helper.tui import model
from helper.tui.app import DetourApp
from helper.tui.connections import ConnectionsTable
from helper.tui.details import CellDetails
from helper.tui.help_screen import HelpScreen
from helper.tui.log_screen import LogScreen
from helper.tui.main_screen import MainScreen
from helper.tui.matrix import RouteMatrix
from helper.tui.setup_screen import SetupScreen
from tests.conftest import config_text
from tests.support.waiting import until
from tests.tui.scenes import MONOTONIC, fake_connection, fixed_app, scene
from tests.tui.screen import eventually, shows

SIZE = (100, 30)
ROUTES = [
    "direct", "tls-fragment", "doh", "doh-fragment", "tgws", "tgws-fragment", "lab-socks",
    "lab-http", "front",
]  # fmt: skip


@pytest.fixture
async def engine():
    engine = scene("sni-reset", connections=3)
    yield engine
    await engine.stop()


def cell_text(app, route: str, service: str) -> str:
    return app.screen.query_one(RouteMatrix).get_cell(route, service).plain


async def go_to(pilot, route: str, service: str) -> None:
    """Move the matrix cursor with the arrow keys, as a user would."""
    matrix = pilot.app.screen.query_one(RouteMatrix)
    row, column = ROUTES.index(route), [s.name for s in matrix.view.services].index(service)
    while matrix.cursor_coordinate.row != row:
        await pilot.press("down" if matrix.cursor_coordinate.row < row else "up")
    while matrix.cursor_coordinate.column != column:
        await pilot.press("right" if matrix.cursor_coordinate.column < column else "left")
    assert matrix.selected == (service, route)


async def test_the_matrix_shows_route_and_diagnosis_per_service(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:

        def check(text: str) -> None:
            assert isinstance(app.screen, MainScreen)
            for service in ("telegram", "whatsapp", "signal"):
                assert cell_text(app, "direct", service) == " ✗ reset after ClientHello"
                assert cell_text(app, "tls-fragment", service).startswith("▶✓ works")
                assert cell_text(app, "lab-http", service).startswith(" ✓ works")
            assert text.count("✓ via tls-fragment") == 3
            assert "proxy 127.0.0.1:1080" in text

        await eventually(pilot, check)


async def test_pin_and_unpin(engine) -> None:
    events = engine.events.subscribe()
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await go_to(pilot, "lab-socks", "whatsapp")
        await pilot.press("p")
        assert engine.router.pins == {"whatsapp": "lab-socks"}
        assert cell_text(app, "lab-socks", "whatsapp").startswith("◆✓")
        assert cell_text(app, "tls-fragment", "whatsapp").startswith(" ✓")  # no longer active
        await shows(pilot, "✓ pinned: lab-socks")
        await pilot.press("p")
        assert engine.router.pins == {}
        assert cell_text(app, "tls-fragment", "whatsapp").startswith("▶✓")
    changes = [e for e in iter(events.get_nowait, None) if isinstance(e, RouteChanged)]
    assert [(e.service, e.old, e.new, e.reason) for e in changes] == [
        ("whatsapp", "tls-fragment", "lab-socks", "pinned by the user"),
        ("whatsapp", "lab-socks", "tls-fragment", "unpinned by the user"),
    ]


async def test_disable_and_enable_a_route(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await go_to(pilot, "tls-fragment", "telegram")
        await pilot.press("d")
        assert engine.router.disabled == {"tls-fragment"}
        assert cell_text(app, "tls-fragment", "signal") == " – disabled"
        assert cell_text(app, "doh-fragment", "signal").startswith("▶✓")  # the next that works
        await shows(pilot, "tls-fragment (off)")
        await pilot.press("p")  # a disabled route cannot be pinned
        assert engine.router.pins == {}
        await pilot.press("d")
        assert engine.router.disabled == set()
        assert cell_text(app, "tls-fragment", "signal").startswith("▶✓")


async def test_disabling_a_pinned_route_unpins_it_and_the_last_route_stays(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await go_to(pilot, "lab-http", "signal")
        await pilot.press("p", "d")
        assert engine.router.pins == {}
        assert engine.router.disabled == {"lab-http"}
        for route in [r for r in ROUTES if r != "lab-http"]:
            await go_to(pilot, route, "signal")
            await pilot.press("d")
        assert engine.router.disabled == set(ROUTES) - {"front"}  # the last one stayed
        assert [s for s in engine.router.services if not engine.router.candidates(s)] == []


async def test_reprobe_the_selection_or_everything(engine, monkeypatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(engine.monitor, "request", lambda service: asked.append(service.name))
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await go_to(pilot, "doh", "signal")
        await pilot.press("r")
        assert asked == ["signal"]
        await pilot.press("R")
        assert asked == ["signal", "telegram", "whatsapp", "signal"]


async def test_details_follow_the_cursor(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.screen.query_one(TabbedContent)
        await pilot.press("c")
        assert tabs.active == "connections-pane"
        await go_to(pilot, "doh", "whatsapp")
        await pilot.press("enter")
        assert tabs.active == "details-pane"
        details = str(app.screen.query_one(CellDetails).render())
        assert "whatsapp via doh" in details
        assert "chain: resolve:doh=https://doh.lab.test/dns-query" in details
        assert (
            "reset right after the TLS ClientHello: SNI-based DPI (tls://web.whatsapp.com:443)"
            in details
        )
        assert "connection_reset during tls_handshake" in details
        assert "connect 1 ms ✓ · tls_handshake 8 ms ✗" in details
        assert "probed 12 s ago" in details
        await go_to(pilot, "tls-fragment", "whatsapp")
        details = str(app.screen.query_one(CellDetails).render())
        assert "new connections take this route first" in details


async def test_live_connections_follow_the_listener_a_few_times_a_second(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        table = app.screen.query_one(ConnectionsTable)
        assert table.row_count == 3
        assert table.get_row("1") == [
            "127.0.0.1:40000", "web.telegram.org:443", "telegram", "tls-fragment",
            "517 B", "48.2 KB", "3.5 s",
        ]  # fmt: skip
        connections = engine.server.connections
        connections[1].stats.down += 10_000_000
        del connections[2]
        fake_connection(engine, 9, started=MONOTONIC)

        def check(text: str) -> None:  # as of the next refresh
            assert table.row_count == 3
            assert "2" not in table.rows and "9" in table.rows
            assert table.get_cell("1", "down") == "10.0 MB"
            assert table.get_cell("9", "duration") == "0.0 s"
            assert "Connections (3)" in text

        await eventually(pilot, check)


async def test_the_setup_screen_tells_apps_where_to_go(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, SetupScreen)
        text = await shows(
            pilot,
            "tg://socks?server=127.0.0.1&port=1080",
            "127.0.0.1:1080  SOCKS5, SOCKS4a and HTTP on one port",
            "Or a PAC file (only the services through detour): turn on",
        )
        assert "█" in text and "▀" in text  # the QR code
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_a_password_is_shown_only_on_request(engine) -> None:
    listen = dataclasses.replace(engine.config.listen, users=(User("alice", "s3cret-pw"),))
    engine.config = dataclasses.replace(engine.config, listen=listen)
    app = fixed_app(engine)
    root = logging.getLogger()
    root.addHandler(app.log_buffer)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await see_the_password_only_on_request(pilot)
    finally:
        root.removeHandler(app.log_buffer)
    assert not [line for *_, line in app.log_buffer.since(0) if "s3cret" in line]


async def see_the_password_only_on_request(pilot) -> None:
    await pilot.press("s")
    hidden = await shows(pilot, "user=alice&pass=••••••••", "QR code hidden")
    assert "s3cret" not in hidden
    assert "█" not in hidden
    await pilot.press("v")
    shown = await shows(pilot, "password s3cret-pw")
    assert "█" in shown

    def hidden_again(text: str) -> None:
        assert "user=alice&pass=••••••••" in text
        assert "s3cret" not in text

    await pilot.press("v")
    await eventually(pilot, hidden_again)


async def test_the_mtproto_links_and_their_code_only_on_request(engine) -> None:
    from helper.config import MTProtoProxyConfig
    from tests.tui.test_qr import decode
    from transports import Endpoint
    from transports.mtproto.secret import parse_secret

    secret = "dd" + "5c" * 16
    mtproto = MTProtoProxyConfig(
        secrets={"alice": parse_secret(secret)}, listen=Endpoint("192.168.1.2", 443)
    )
    engine.config = dataclasses.replace(engine.config, mtproto_proxy=mtproto)
    app = fixed_app(engine)
    link = f"tg://proxy?server=192.168.1.2&port=443&secret={secret}"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        hidden = await shows(
            pilot, "alice (dd): tg://proxy?server=192.168.1.2&port=443&secret=***", "QR code hidden"
        )
        assert secret not in hidden and "█" not in hidden
        await pilot.press("v")

        def revealed(text: str) -> None:
            assert link in "".join(text.split())  # wrapped at the screen's width
            assert "█" in text

        await eventually(pilot, revealed)
        qr = str(app.screen.query_one("#qr").render())
        if _has_zxing():
            assert decode(qr.splitlines()) == link
        await pilot.press("v")

        def hidden_again(text: str) -> None:
            assert secret not in "".join(text.split())

        await eventually(pilot, hidden_again)


def _has_zxing() -> bool:
    try:
        import zxingcpp  # noqa: F401
    except ImportError:
        return False
    return True


async def test_route_credentials_never_reach_the_screen() -> None:
    text = config_text(
        routes={"vps": "socks5://alice:s3cret@127.0.0.1:9", "direct": "direct"},
        extra="""
        [[service]]
        name = "telegram"
        domains = ["telegram.org"]
        probes = ["tcp://127.0.0.1:9"]
        """,
    )
    engine = Engine(parse_config(text), probe_on_start=False)
    app = DetourApp(engine)
    await engine.start()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            await shows(pilot, "chain: socks5://alice:***@127.0.0.1:9")
            await pilot.press("r")
            # The probe through the dead upstream proxy fails at once.
            await until(lambda: len(engine.monitor.results) == 2)
            await shows(pilot, "✗ refused")
            # Each screen, once it shows what it shows, shows no password.
            for keys, marker in (
                ((), "✗ refused"),
                (("c",), "destination"),
                (("c", "s"), "Set up your apps"),
                (("escape", "l"), "Log"),
            ):
                await pilot.press(*keys)
                text = await shows(pilot, marker)
                assert "s3cret" not in text, keys
    finally:
        await engine.stop()


async def test_the_log_view_shows_detours_log(engine) -> None:
    app = fixed_app(engine)
    logger = logging.getLogger("detour.test-tui")
    logger.addHandler(app.log_buffer)
    try:
        logger.warning("before the log view opened")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("l")
            assert isinstance(app.screen, LogScreen)
            logger.warning("while it is open")

            def logged(_screen: str) -> None:  # as of the log view's next read of the buffer
                lines = [str(line.text) for line in app.screen.query_one(RichLog).lines]
                text = "\n".join(lines)
                assert "WARNING before the log view opened" in text
                assert "WARNING while it is open" in text

            await eventually(pilot, logged)
            await pilot.press("l")
            assert isinstance(app.screen, MainScreen)
    finally:
        logger.removeHandler(app.log_buffer)


async def test_help_and_quit(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await shows(pilot, "pin the selected route")
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("q")
        await until(lambda: not app.is_running)


async def test_80x24_keeps_everything_essential(engine) -> None:
    app = fixed_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:

        def check(text: str) -> None:
            lines = text.splitlines()
            assert len(lines) == 24 and max(len(line) for line in lines) <= 80
            for word in ("telegram", "whatsapp", "signal", *ROUTES):
                assert word in text, word
            for route in ROUTES:
                row = next((line for line in lines if line.startswith(f"│ {route} ")), "")
                marks = [c for c in row if c in (model.WORKS, model.FAILS, model.OFF)]
                assert len(marks) == 3, row  # one glyph per service, none cut off
            assert text.count("✓ via tls-fragment") == 3
            footer = lines[-1]
            for key in ("r probe", "p pin", "d on/off", "c conns", "q quit", "? help", "s apps"):
                assert key in footer, footer
            assert "l log" in footer

        await eventually(pilot, check)


async def test_a_drawing_bug_is_logged_not_shown(engine, monkeypatch) -> None:
    app = fixed_app(engine)
    logger = logging.getLogger("detour.tui")
    logger.addHandler(app.log_buffer)
    try:
        async with app.run_test(size=SIZE):

            def broken(*args, **kwargs):
                raise RuntimeError("drawing bug")

            monkeypatch.setattr(model, "matrix", broken)
            await until(
                lambda: any("drawing bug" in line for _, _, line in app.log_buffer.since(0))
            )  # the next redraw failed
            assert app.is_running
    finally:
        logger.removeHandler(app.log_buffer)
        lines = [line for _, _, line in app.log_buffer.since(0)]
        assert any("the terminal UI failed to redraw   (RuntimeError: drawing bug)" in line
                   for line in lines)  # fmt: skip


async def test_a_config_without_services_is_not_a_crash() -> None:
    engine = Engine(parse_config(config_text()), probe_on_start=False)
    try:
        app = DetourApp(engine)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("enter", "p", "d", "r", "R", "c", "c")
            assert app.is_running
            await shows(pilot, "No services configured")
    finally:
        await engine.stop()


async def test_route_changes_from_probes_are_announced(engine, monkeypatch) -> None:
    app = fixed_app(engine)
    said: list[str] = []
    async with app.run_test(size=SIZE):
        monkeypatch.setattr(app, "notify", lambda message, **kwargs: said.append(message))
        engine.events.publish(RouteChanged("signal", "tls-fragment", "lab-socks", "probed signal"))
        engine.events.publish(RouteChanged("signal", "lab-socks", None, "probed signal"))
        engine.events.publish(RouteChanged("signal", None, "lab-socks", "probed signal"))
        engine.events.publish(RouteChanged("signal", "lab-socks", "direct", "pinned by the user"))
        await until(lambda: len(said) >= 2)  # the next refresh reads all four
    assert said == [
        "signal: now via lab-socks (probed signal)",
        "signal: no route works any more (probed signal)",
    ]  # not the first verdict at start, nor the user's own change (the key says so)


async def test_ctrl_r_reads_the_config_file_again(start_engine, tmp_path) -> None:
    from helper.config import load_config
    from helper.headless import reload_config

    path = tmp_path / "detour.toml"
    path.write_text(config_text(routes={"a": "direct", "b": "tlsfrag:1"}))
    engine = await start_engine(load_config(path), probe_on_start=False)
    said: list[tuple[str, str]] = []
    app = DetourApp(engine, reload=lambda: reload_config(engine, str(path), None))
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **kw: said.append((message, kw.get("severity", "")))
        path.write_text(config_text(routes={"b": "tlsfrag:1", "c": "direct"}))
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        assert [r.name for r in engine.router.routes] == ["b", "c"]
        assert said[-1][1] == "information" and said[-1][0].startswith(f"reloaded {path}")
        path.write_text("[[route]]\nname = 1\n")  # a broken file changes nothing
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        assert [r.name for r in engine.router.routes] == ["b", "c"]
        assert said[-1][1] == "error" and "not reloaded" in said[-1][0]
        await pilot.press("q")


async def test_ctrl_r_without_a_config_file_says_so(engine) -> None:
    app = fixed_app(engine)
    said: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **kw: said.append(message)
        await pilot.press("ctrl+r")
        assert said == ["running with the built-in config: there is no file to reload"]


async def test_f_searches_the_selected_service_and_the_details_show_the_search(
    engine, monkeypatch
) -> None:
    from helper.status import SearchView

    asked: list[list[str] | None] = []
    monkeypatch.setattr(engine.searches, "start", lambda services=None: asked.append(services))
    view = SearchView(
        running=False,
        started=0.0,
        finished=1.0,
        services={
            "signal": {
                "winner": {"route": "found-oob-sni-tlsfrag-sni", "chain": "oob:sni | tlsfrag:sni"},
                "verdict": "works via found-oob-sni-tlsfrag-sni (oob:sni | tlsfrag:sni)",
                "tried": [
                    {"chain": "tlsfrag:sni", "stage": "screen", "ok": False,
                     "target": "tls://chat.signal.org:443", "failure": "connection_reset",
                     "op": "tls_handshake"},
                    {"chain": "oob:sni | tlsfrag:sni", "stage": "confirm", "ok": True,
                     "target": None, "failure": None, "op": None},
                ],
            }
        },
    )  # fmt: skip
    monkeypatch.setattr(engine.searches, "view", lambda: view)
    app = fixed_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await go_to(pilot, "doh", "signal")
        await pilot.press("f")
        assert asked == [["signal"]]
        details = str(app.screen.query_one(CellDetails).render())
        assert "Strategy search  2 attempts" in details
        assert "works via found-oob-sni-tlsfrag-sni (oob:sni | tlsfrag:sni)" in details
        assert "✗ tlsfrag:sni  connection_reset during tls_handshake" in details
        assert "✓ oob:sni | tlsfrag:sni  works (every target)" in details
        await go_to(pilot, "doh", "telegram")  # no search for telegram: nothing about it
        assert "Strategy search" not in str(app.screen.query_one(CellDetails).render())
