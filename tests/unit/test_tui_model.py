"""What the terminal UI shows, computed without the UI: each cell's state and words, each
service's verdict, probe progress, connection rows, the proxy settings, Telegram's link and
its QR code, and the log buffer."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import segno

from helper.config import User
from helper.probe.result import ProbeResult, TargetResult
from helper.routing.health import RouteHealth
from helper.status import ConnectionView, ProbeRound, ProbeTally
from helper.tui import model
from helper.tui.appsetup import proxy_settings, qr_rows, telegram_link
from helper.tui.logbuffer import LogBuffer
from tests.tui.scenes import MONOTONIC, scene
from transports import Failure, Op


@pytest.fixture
async def sni_reset():
    engine = scene("sni-reset")
    yield engine
    await engine.stop()


def cell(engine, service_name: str, route: str, probing=()) -> model.Cell:
    snapshot = engine.snapshot()
    if probing:
        snapshot = dataclasses.replace(snapshot, probes=ProbeRound(frozenset(probing), 1, 0))
    return model.cell(snapshot, snapshot.service(service_name), snapshot.route(route))


async def test_cells_say_what_the_probes_found(sni_reset) -> None:
    assert cell(sni_reset, "telegram", "direct").label() == " ✗ reset after ClientHello"
    assert cell(sni_reset, "telegram", "tls-fragment").label() == "▶✓ works 12 ms"
    assert cell(sni_reset, "telegram", "lab-socks").label() == " ✓ works 12 ms"


async def test_pinned_disabled_and_probing_cells(sni_reset) -> None:
    router = sni_reset.router
    router.pin("telegram", "lab-socks")
    assert cell(sni_reset, "telegram", "lab-socks").label() == "◆✓ works 12 ms"
    assert cell(sni_reset, "telegram", "tls-fragment").label() == " ✓ works 12 ms"
    snapshot = sni_reset.snapshot()
    assert model.service_header(snapshot, snapshot.service("telegram")).text == (
        "✓ pinned: lab-socks"
    )
    router.disable("doh")
    assert cell(sni_reset, "telegram", "doh").label() == " – disabled"
    probing = {("signal", "direct")}
    assert cell(sni_reset, "signal", "direct", probing).label() == " … probing"


async def test_a_failure_from_client_connections_uses_the_health_words(sni_reset) -> None:
    health = sni_reset.router.health
    health.set(
        "whatsapp",
        "lab-http",
        RouteHealth(ok=False, failure="stalled", op="read", checked_at=1.0, source="dial"),
    )
    assert cell(sni_reset, "whatsapp", "lab-http").text == "frozen"
    health.set("whatsapp", "lab-http", RouteHealth(ok=False, failure="from_the_future"))
    assert cell(sni_reset, "whatsapp", "lab-http").text == "from_the_future"


async def test_service_headers() -> None:
    engine = scene("allow-list", probing=("whatsapp",))
    try:
        engine.router.disable("front")  # the one route that works in this scenario
        snapshot = engine.snapshot()
        headers = {s.name: model.service_header(snapshot, s).text for s in snapshot.services}
        assert headers == {
            "telegram": "✗ no route works",
            "whatsapp": "… probing",
            "signal": "· not known yet",  # only two of its routes were probed
        }
    finally:
        await engine.stop()


async def test_a_route_outside_the_services_routes_is_marked(sni_reset) -> None:
    snapshot = sni_reset.snapshot()
    telegram = dataclasses.replace(snapshot.service("telegram"), routes=("direct",))
    unused = model.cell(snapshot, telegram, snapshot.route("lab-socks"))
    assert unused.label() == " – not its route"


def test_probe_progress_counts_a_round() -> None:
    progress = ProbeTally()
    assert model.describe_probes(progress.freeze(), None, 100.0) == "not probed yet"
    progress.start("telegram", "direct")
    progress.start("telegram", "doh")
    progress.finish("telegram", "direct")
    assert model.describe_probes(progress.freeze(), None, 100.0) == "probing … 1/2"
    progress.finish("telegram", "doh")
    assert not progress.freeze().running
    assert model.describe_probes(progress.freeze(), 41.0, 100.0) == "probed 59 s ago"
    progress.start("signal", "direct")  # a new round
    assert model.describe_probes(progress.freeze(), 41.0, 100.0) == "probing … 0/1"


def test_connection_rows() -> None:
    conn = ConnectionView(7, "mixed", "127.0.0.1:40000", "", None, None, None, MONOTONIC - 75, 0, 0)
    row = model.connection_row(conn, MONOTONIC)
    assert (row.destination, row.service, row.route, row.duration) == (
        "…",
        "–",
        "connecting…",
        "1 m 15 s",
    )
    conn = dataclasses.replace(
        conn, target="web.telegram.org:443", service="telegram", route="doh", up=517, down=1_234_567
    )
    row = model.connection_row(conn, MONOTONIC)
    assert (row.destination, row.up, row.down) == ("web.telegram.org:443", "517 B", "1.2 MB")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (5120, "5.1 KB"), (150_000, "150 KB"), (1_500_000, "1.5 MB"),
     (12_345_678_901, "12.3 GB"), (5 * 10**12, "5000 GB")],
)  # fmt: skip
def test_format_bytes(n: int, text: str) -> None:
    assert model.format_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4 s"), (12.4, "12 s"), (75, "1 m 15 s"), (3725, "1 h 02 m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert model.format_duration(seconds) == text


def test_proxy_settings() -> None:
    loopback = proxy_settings("127.0.0.1", 1080)
    assert (loopback.address, loopback.only_this_machine) == ("127.0.0.1:1080", True)
    everywhere = proxy_settings("0.0.0.0", 1080, addresses=lambda: ["192.0.2.7"])
    assert (everywhere.address, everywhere.only_this_machine) == ("192.0.2.7:1080", False)
    unknown = proxy_settings("::", 1080, addresses=list)
    assert unknown.unknown_host and unknown.address == "[::]:1080"
    lan = proxy_settings("192.0.2.7", 1080, (User("alice", "s3cret pass"),))
    assert (lan.user, lan.password, lan.only_this_machine) == ("alice", "s3cret pass", False)


def test_telegram_link_hides_the_password_unless_asked() -> None:
    plain = proxy_settings("127.0.0.1", 1080)
    assert telegram_link(plain) == "tg://socks?server=127.0.0.1&port=1080"
    secret = proxy_settings("192.0.2.7", 1080, (User("alice", "s3cret pass&x"),))
    shown = telegram_link(secret)
    assert "s3cret" not in shown
    assert shown == "tg://socks?server=192.0.2.7&port=1080&user=alice&pass=••••••••"
    assert telegram_link(secret, reveal=True) == (
        "tg://socks?server=192.0.2.7&port=1080&user=alice&pass=s3cret%20pass%26x"
    )


def test_the_qr_code_is_the_links_modules_in_half_blocks() -> None:
    link = "tg://socks?server=127.0.0.1&port=1080"
    rows = qr_rows(link, border=2)
    modules = [list(r) for r in segno.make(link, micro=False).matrix_iter(border=2)]
    decoded = []
    for line in rows:
        decoded.append([int(c in "█▀") for c in line])
        decoded.append([int(c in "█▄") for c in line])
    if len(modules) % 2:
        assert decoded.pop() == [0] * len(modules[0])  # the padding row is light
    assert decoded == modules
    assert set("".join(rows)) <= set("█▀▄ ")


def test_log_buffer_keeps_the_last_lines_on_one_line_each() -> None:
    buffer = LogBuffer(limit=3)
    logger = logging.getLogger("detour.test-tui-buffer")
    logger.addHandler(buffer)
    logger.propagate = False
    try:
        for i in range(5):
            logger.warning("line %d", i)
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("it broke")
    finally:
        logger.removeHandler(buffer)
    lines = buffer.since(0)
    assert [seq for seq, _, _ in lines] == [3, 4, 5]
    assert lines[-1][1] == logging.ERROR
    assert lines[-1][2].endswith("it broke   (ValueError: bad thing)")
    assert "Traceback" not in lines[-1][2]
    assert buffer.since(5) == lines[-1:]


async def test_a_freeze_shows_where_the_probe_saw_it(sni_reset) -> None:
    target = TargetResult("https://web.telegram.org/bytes/65536", received=16384)
    target.fail(Failure.STALLED, Op.READ, "nothing more")
    result = ProbeResult("telegram", "direct", "direct", [target], checked_at=5.0)
    sni_reset.monitor.results[("telegram", "direct")] = result
    sni_reset.router.health.record_probe(result)
    assert cell(sni_reset, "telegram", "direct").text == "frozen after 16 KB"


async def test_a_live_connection_that_froze_says_so(sni_reset) -> None:
    sni_reset.router.health.record_stall("telegram", "direct", "frozen_after_16KB", "words")
    assert cell(sni_reset, "telegram", "direct").text == "frozen after 16 KB"
