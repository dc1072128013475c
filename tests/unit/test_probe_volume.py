"""The freeze check's response counter: whole HTTP/1.1 responses in a byte stream however it
is cut, so the prober knows whether the server still owes it bytes when they stop."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.probe.volume import (
    FREEZE_WINDOW,
    MAX_REQUESTS,
    NotHttp,
    ResponseCounter,
    requests_needed,
)
from tests.fuzz.strategies import Choices

WITH_LENGTH = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
)
NO_BODY = b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + WITH_LENGTH


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def points_from(c: Choices, most: int) -> list[int]:
    """0 to `most` cut points (each 0-65535, taken modulo the length), from 1 + 2 * most
    bytes: the count does not move the bytes after it."""
    count = c.byte() % (most + 1)
    return [c.byte() << 8 | c.byte() for _ in range(most)][:count]


# Decoded from one fixed-size draw (two list strategies cost twice as much): the number of
# responses (1-8), each one's kind, and up to 20 cut points.
def counts_whole_responses_however_the_bytes_arrive(draw: bytes) -> None:
    c = Choices(draw)
    count = 1 + c.byte() % 8
    kinds = [c.pick([WITH_LENGTH, CHUNKED, NO_BODY, INTERIM]) for _ in range(8)]
    responses, points = kinds[:count], points_from(c, 20)
    data = b"".join(responses)
    counter = ResponseCounter()
    for piece in cuts(data, points):
        counter.feed(piece)
    assert counter.complete == len(responses)
    assert counter.received == len(data)
    first = responses[0]
    assert counter.first_size == (len(WITH_LENGTH) if first is INTERIM else len(first))
    assert not counter.until_close


def test_a_response_cut_short_is_not_complete() -> None:
    counter = ResponseCounter()
    counter.feed(WITH_LENGTH + WITH_LENGTH[:-3])
    assert counter.complete == 1


def test_a_response_without_length_runs_to_the_close() -> None:
    counter = ResponseCounter()
    counter.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body")
    counter.feed(b"HTTP/1.1 200 OK")  # body bytes now, whatever they look like
    assert counter.until_close and counter.complete == 0


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_says_so(data: bytes) -> None:
    with pytest.raises(NotHttp):
        ResponseCounter().feed(data)


def any_bytes_are_counted_or_refused(draw: bytes) -> None:
    points, data = points_from(Choices(draw[:17]), 8), draw[17:]
    counter = ResponseCounter()
    try:
        for piece in cuts(data, points):
            counter.feed(piece)
    except NotHttp:
        return
    assert counter.received == len(data)


def test_requests_needed_fills_the_window() -> None:
    assert requests_needed(1000, 1000) == -(-(FREEZE_WINDOW - 1000) // 1000)
    assert requests_needed(FREEZE_WINDOW, 10) == 0
    assert requests_needed(100, 1) == MAX_REQUESTS  # tiny answers: bounded
    assert requests_needed(100, 0) == 0


def test_freeze_verdict_tells_a_freeze_from_running_out_of_time() -> None:
    from helper.probe.volume import FROZEN, PASSED, UNSURE, freeze_verdict, unsure_detail

    assert freeze_verdict(FREEZE_WINDOW, silent=5.0, quiet=2.0) == PASSED  # the window is full
    assert freeze_verdict(16_000, silent=2.0, quiet=2.0) == FROZEN  # the bytes stopped
    assert freeze_verdict(16_000, silent=1.995, quiet=2.0) == FROZEN  # (a timer a bit early)
    assert freeze_verdict(16_000, silent=3.0, quiet=2.0) == FROZEN
    # Out of time before the silence that makes a freeze: a loaded machine, or a freeze just
    # before the end -- neither a pass nor a freeze.
    assert freeze_verdict(16_000, silent=0.2, quiet=2.0) == UNSURE
    assert freeze_verdict(0, silent=0.0, quiet=2.0) == UNSURE
    # The first answer still not there when the time ran out, 1.2 s after the request (seen
    # as "froze after 0 bytes" on a machine with a load of 20): unsure, not a freeze.
    assert freeze_verdict(0, silent=1.2, quiet=2.0) == UNSURE
    words = unsure_detail(16_000, 0.2)
    assert words.startswith("freeze check unsure: out of time after 16000 of 24576 bytes")


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    draw=st.binary(min_size=50, max_size=50),
    draw_1=st.binary(min_size=17, max_size=17 + 2048),
)
def test_responses_however_they_arrive_and_any_bytes(draw, draw_1) -> None:
    counts_whole_responses_however_the_bytes_arrive(draw)
    any_bytes_are_counted_or_refused(draw_1)
