"""Limit bookkeeping for the listeners and the throttled log (no sockets)."""

from __future__ import annotations

import logging

import pytest

from helper.proxy.limits import ConnectionBook, Limits, ThrottledLog


def test_per_client_handshakes_leave_room_for_others() -> None:
    book = ConnectionBook(Limits(connections=100, connections_per_client=50, handshakes=20,
                                 handshakes_per_client=4))  # fmt: skip
    assert all(book.admit("10.0.0.5") is None for _ in range(4))
    assert "max_handshakes_per_client" in (book.admit("10.0.0.5") or "")
    assert book.admit("10.0.0.6") is None
    book.handshake_over("10.0.0.5")
    assert book.admit("10.0.0.5") is None  # a finished handshake frees its place


def test_totals_and_release() -> None:
    book = ConnectionBook(Limits(connections=3, connections_per_client=2, handshakes=0,
                                 handshakes_per_client=0))  # fmt: skip
    assert book.admit("a") is None
    assert book.admit("a") is None
    assert "max_connections_per_client" in (book.admit("a") or "")
    assert book.admit("b") is None
    assert "max_connections)" in (book.admit("c") or "")
    book.release("a", handshaking=True)
    assert book.admit("c") is None
    for client in ("a", "b", "c"):
        book.release(client, handshaking=True)
    assert book.open_total == 0 and book.handshaking_total == 0
    assert not book.open and not book.handshaking  # no entries left for gone clients


def test_total_handshakes() -> None:
    book = ConnectionBook(Limits(handshakes=2, handshakes_per_client=0))
    assert book.admit("a") is None and book.admit("b") is None
    assert "max_handshakes)" in (book.admit("c") or "")
    book.handshake_over("a")
    assert book.admit("c") is None
    book.release("a", handshaking=False)
    assert book.open_total == 2


def test_zero_means_no_limit() -> None:
    book = ConnectionBook(Limits(0, 0, 0, 0))
    assert all(book.admit("a") is None for _ in range(5000))


def test_throttled_log(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = ThrottledLog(logging.getLogger("test.throttle"), burst=2, period=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.throttle"):
        results = [log.log("flood", logging.WARNING, "refused %s", n) for n in range(100)]
        assert results.count(True) == 2
        assert log.log("other", logging.WARNING, "another kind")  # kinds have their own budget
        now[0] = 11
        assert log.log("flood", logging.WARNING, "refused %s", "later")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused 0",
        "refused 1",
        "another kind",
        "refused later (98 more like this not logged)",
    ]
