"""Route health: how results order routes, when repeated dial failures count, and what is
remembered per network."""

from __future__ import annotations

import json
import time

from helper.routing import Route
from helper.routing.health import DIAL_FAILURES_BEFORE_REPROBE, HealthBook, RouteHealth
from helper.routing.state import HealthStore, network_id
from transports import DialError, Failure, Op, parse_chain
from transports.direct import DirectDialer


def route(name: str) -> Route:
    return Route(name, parse_chain("direct"), DirectDialer())


A, B, C = route("a"), route("b"), route("c")


def test_unknown_routes_keep_their_order() -> None:
    assert HealthBook().order("telegram", [A, B, C]) == [A, B, C]


def test_working_first_then_unknown_then_failing_each_in_order() -> None:
    book = HealthBook()
    book.set("telegram", "a", RouteHealth(ok=False))
    book.set("telegram", "c", RouteHealth(ok=True))
    assert book.order("telegram", [A, B, C]) == [C, B, A]
    book.set("telegram", "b", RouteHealth(ok=True))
    assert book.order("telegram", [A, B, C]) == [B, C, A]  # both work: config order decides
    assert book.active("telegram", [A, B, C]) is B
    assert book.order("signal", [A, B, C]) == [A, B, C]  # per service


def test_repeated_dial_failures_make_a_route_failing_once() -> None:
    book = HealthBook()
    error = DialError(Failure.CONNECTION_REFUSED, Op.CONNECT, "refused")
    tipped = [
        book.record_dial("telegram", "a", error) for _ in range(DIAL_FAILURES_BEFORE_REPROBE + 2)
    ]
    assert tipped == [False] * (DIAL_FAILURES_BEFORE_REPROBE - 1) + [True, False, False]
    health = book.get("telegram", "a")
    assert (health.ok, health.failure, health.op, health.source) == (
        False, "connection_refused", "connect", "dial",
    )  # fmt: skip
    book.record_dial("telegram", "a", None)
    assert book.get("telegram", "a").dial_failures == 0


def test_a_success_in_between_restarts_the_count() -> None:
    book = HealthBook()
    error = DialError(Failure.TIMEOUT, Op.CONNECT, "")
    for _ in range(DIAL_FAILURES_BEFORE_REPROBE - 1):
        book.record_dial("t", "a", error)
    book.record_dial("t", "a", None)
    assert not book.record_dial("t", "a", error)
    assert book.get("t", "a").ok is None


def test_store_remembers_per_network(tmp_path) -> None:
    store = HealthStore(tmp_path)
    book = HealthBook()
    book.set(
        "telegram", "tls-fragment", RouteHealth(ok=True, latency_ms=40, checked_at=time.time())
    )
    book.set(
        "telegram",
        "direct",
        RouteHealth(ok=False, failure="connection_reset", checked_at=time.time()),
    )
    book.set("signal", "direct", RouteHealth())  # unknown: not worth remembering
    store.save("home", book)

    same = HealthBook()
    assert store.load("home", same) == 2
    assert same.get("telegram", "tls-fragment").ok is True
    assert same.get("telegram", "tls-fragment").source == "memory"
    assert (
        same.order("telegram", [route("direct"), route("tls-fragment")])[0].name == "tls-fragment"
    )

    elsewhere = HealthBook()
    assert store.load("cafe", elsewhere) == 0
    assert elsewhere.get("telegram", "tls-fragment").ok is None


def test_store_forgets_old_results_and_survives_a_broken_file(tmp_path) -> None:
    store = HealthStore(tmp_path)
    book = HealthBook()
    book.set("telegram", "direct", RouteHealth(ok=True, checked_at=time.time() - 30 * 86400))
    store.save("home", book)
    assert store.load("home", HealthBook()) == 0
    store.path.write_text("{not json")
    assert store.load("home", HealthBook()) == 0
    store.save("home", book)  # and replaces it
    assert "home" in json.loads(store.path.read_text())


def test_a_file_where_the_state_directory_should_be_is_said_once(tmp_path, caplog) -> None:
    """A file as the state directory (or in its path): one warning naming the path and what
    detour does instead, however many reads and saves follow (it was one per read and per
    save, from each of them)."""
    book = HealthBook()
    book.set("t", "a", RouteHealth(ok=True, checked_at=time.time()))
    for state in (tmp_path / "file", tmp_path / "file" / "below"):
        (tmp_path / "file").write_text("not a directory")
        caplog.clear()
        for store in (HealthStore(state), HealthStore(state)):  # a reload makes another
            assert store.load("home", HealthBook()) == 0
            store.save("home", book)
            assert not store.knows("home")
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"the state directory {state} ")
        assert "detour runs without remembering what worked per network" in lines[0]
    assert (tmp_path / "file").read_text() == "not a directory"
    caplog.clear()
    long = tmp_path / ("a" * 5000)  # ENAMETOOLONG: said once too
    for _ in range(3):
        assert HealthStore(long).load("home", HealthBook()) == 0
        HealthStore(long).save("home", book)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert len(lines) == 1 and "cannot be used (File name too long)" in lines[0], lines


def test_no_network_no_memory(tmp_path) -> None:
    store = HealthStore(tmp_path)
    book = HealthBook()
    book.set("t", "a", RouteHealth(ok=True, checked_at=time.time()))
    store.save("", book)
    assert not store.path.exists()


def test_network_id_is_stable() -> None:
    assert network_id() == network_id()


def test_a_pass_with_an_unsure_freeze_check_ranks_after_sure_passes() -> None:
    from helper.probe.result import ProbeResult, TargetResult

    book = HealthBook()
    unsure = TargetResult("tls://x:443", freeze_checked=False, freeze_unsure="out of time")
    book.record_probe(ProbeResult("telegram", "a", "direct", [unsure]))
    assert book.get("telegram", "a").ok and book.get("telegram", "a").freeze_unsure
    assert book.active("telegram", [A, B, C]) is A  # the only one known to work: used
    book.set("telegram", "c", RouteHealth(ok=True))
    assert book.order("telegram", [A, B, C]) == [C, A, B]  # sure, unsure, unknown
    assert book.active("telegram", [A, B, C]) is C
    book.set("telegram", "b", RouteHealth(ok=False))
    assert book.order("telegram", [A, B, C]) == [C, A, B]  # failing last
    sure = TargetResult("tls://x:443", freeze_checked=True)
    book.record_probe(ProbeResult("telegram", "a", "direct", [sure]))
    assert book.active("telegram", [A, B, C]) is A  # a sure pass: config order again
