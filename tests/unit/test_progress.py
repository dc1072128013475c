"""The progress watch of live connections (helper/routing/progress.py), without sockets."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from helper.probe.result import ProbeResult, TargetResult
from helper.routing.health import HealthBook
from helper.routing.progress import RESEND_GAP, UPLOAD_LIMIT, ProgressWatch, TlsRecords
from helper.routing.stall_hold import StallHold
from tests.fuzz.strategies import Choices
from transports import Failure, Op


def record(size: int, content_type: int = 23) -> bytes:
    return bytes([content_type, 3, 3]) + size.to_bytes(2, "big") + b"\xaa" * size


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


SERVER_HELLO = record(90, 22) + record(1, 20) + record(3000, 23)


# --- TLS record boundaries ----------------------------------------------------------------


def numbers(c: Choices, low: int, high: int, most: int, least: int = 0) -> list[int]:
    """`least` to `most` integers in [low, high] (either end reachable), from 1 + 2 * most
    bytes: the count does not move the bytes after it."""
    count = least + c.byte() % (most - least + 1)
    return [low + (c.byte() << 8 | c.byte()) % (high - low + 1) for _ in range(most)][:count]


# Each property decodes its input from one fixed-size draw (lists of integers cost twice
# as much to generate).
def records_cut_anywhere_end_at_a_boundary(draw: bytes) -> None:
    c = Choices(draw)
    sizes, points = numbers(c, 0, 300, 4, least=1), numbers(c, 0, 1300, 6)
    stream = b"".join(record(size) for size in sizes)
    records = TlsRecords()
    for chunk in cut(stream, points):
        records.feed(chunk)
    assert records.tls is True and not records.mid_record


def a_stream_cut_inside_a_record_is_mid_record(draw: bytes) -> None:
    """Cut after the first header (which tells whether it is TLS at all) and inside a record:
    its header or its body."""
    c = Choices(draw)
    sizes, which = numbers(c, 1, 300, 4, least=1), c.byte() % 4
    into, points = 1 + (c.byte() << 8 | c.byte()) % 304, numbers(c, 0, 1300, 4)
    which %= len(sizes)
    start = sum(5 + size for size in sizes[:which])
    end = start + into % (5 + sizes[which])
    if end < 5 or end == start:
        end = start + 5 + sizes[which] - 1  # the record's last byte still owed
    stream = b"".join(record(size) for size in sizes)[:end]
    records = TlsRecords()
    for chunk in cut(stream, points):
        records.feed(chunk)
    assert records.mid_record


def any_bytes_are_read_without_error(draw: bytes) -> None:
    # 0-8 chunks of 0-64 bytes each, cut from the bytes after a head of 9.
    c, rest = Choices(draw[:9]), draw[9:]
    count, lengths, chunks = c.byte() % 9, [c.byte() % 65 for _ in range(8)], []
    for length in lengths[:count]:
        chunks.append(rest[:length])
        rest = rest[length:]
    records = TlsRecords()
    for chunk in chunks:
        records.feed(chunk)
    assert records.tls in (None, True, False)
    if records.tls is False:
        assert not records.mid_record


def test_bytes_that_are_not_tls_are_never_mid_record() -> None:
    records = TlsRecords()
    records.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n")
    assert records.tls is False and not records.mid_record
    records.feed(record(10))  # once not TLS, for good
    assert records.tls is False


# --- the watch ----------------------------------------------------------------------------


def test_a_tls_transfer_frozen_inside_a_record_is_a_stall() -> None:
    watch = ProgressWatch(10.0, now=0.0)
    watch.sent(517, 0.0)  # ClientHello
    watch.received(SERVER_HELLO, 0.1)
    watch.sent(80, 0.2)  # a request
    body = record(16384)
    watch.received(body[:13000], 0.3)  # 16 KB in all, then nothing
    assert watch.check(5.0) is None
    stall = watch.check(10.4)
    assert stall is not None and stall.diagnosis == "frozen_after_15KB"
    assert stall.received == len(SERVER_HELLO) + 13000
    assert watch.check(30.0) is None  # said once


def test_an_idle_tls_connection_is_never_a_stall() -> None:
    """A keep-alive between requests, an idle WebSocket, a long poll: the server rests at a
    record boundary, however long, and whatever the client sent meanwhile."""
    watch = ProgressWatch(10.0, now=0.0)
    watch.received(SERVER_HELLO, 0.1)
    watch.sent(200, 1.0)  # a long poll ...
    watch.sent(30, 5.0)  # ... a WebSocket ping the server does not answer (yet)
    for t in (20.0, 100.0, 3600.0):
        assert watch.check(t) is None


def test_a_slow_transfer_inside_a_record_is_not_a_stall() -> None:
    watch = ProgressWatch(10.0, now=0.0)
    watch.received(SERVER_HELLO, 0.1)
    body = record(16384)
    for i, t in enumerate(range(1, 60, 5)):  # a byte now and then: slow, not frozen
        watch.received(body[i * 100 : (i + 1) * 100], float(t))
        assert watch.check(t + 4.9) is None


def test_a_client_repeating_itself_unanswered_is_a_stall_when_not_tls() -> None:
    watch = ProgressWatch(10.0, now=0.0)
    watch.sent(64, 0.0)  # MTProto: the obfuscated init and a request
    watch.received(b"\xef" * 20000, 0.2)  # answers, then the freeze
    watch.sent(40, 1.0)  # an ack ...
    assert watch.check(11.5) is None  # one write unanswered: a long poll, perhaps
    watch.sent(40, 1.0 + RESEND_GAP)  # ... a ping: the client repeats itself
    stall = watch.check(11.5)
    assert stall is not None and stall.diagnosis == "no_answer_after_19KB"


def test_one_unanswered_request_or_an_upload_is_not_a_stall() -> None:
    poll = ProgressWatch(10.0, now=0.0)
    poll.received(b"x" * 100, 0.0)
    poll.sent(300, 1.0)  # one request, held by the server
    assert poll.check(100.0) is None
    upload = ProgressWatch(10.0, now=0.0)
    upload.received(b"x" * 100, 0.0)
    for t in range(1, 40):  # a large upload the server answers only at its end
        upload.sent(UPLOAD_LIMIT // 8, float(t))
    assert upload.check(40.0) is None


def test_an_answer_clears_what_was_unanswered() -> None:
    watch = ProgressWatch(10.0, now=0.0)
    watch.received(b"x" * 100, 0.0)
    watch.sent(40, 1.0)
    watch.sent(40, 3.0)
    watch.received(b"y" * 10, 4.0)  # answered
    assert watch.check(12.0) is None
    watch.sent(40, 20.0)
    assert watch.check(29.0) is None


def test_a_stall_fails_the_route_at_once_for_its_service() -> None:
    book = HealthBook()
    book.record_dial("telegram", "direct", None)
    assert book.record_stall("telegram", "direct", "frozen_after_16KB", "words")
    health = book.get("telegram", "direct")
    assert (health.ok, health.failure, health.op) == (False, "stalled", "read")
    assert (health.diagnosis, health.source) == ("frozen_after_16KB", "connection")
    assert book.get("whatsapp", "direct").ok is None  # per service
    assert not book.record_stall("telegram", "direct", "frozen_after_17KB", "again")
    book.record_dial("telegram", "direct", None)  # a later connection's answer: still failing
    assert book.get("telegram", "direct").ok is False


# --- hysteresis: a live freeze outweighs the next passing probe ------------------------------

KEY = ("telegram", "direct")


def test_a_route_never_stalled_is_not_held() -> None:
    hold = StallHold(hold=60.0)
    assert hold.probe_passed(KEY, True, 0.0) == ""
    assert KEY not in hold


def test_a_passing_probe_soon_after_a_live_freeze_is_held() -> None:
    hold = StallHold(hold=60.0, unchecked_hold=300.0)
    hold.stalled(KEY, 100.0)
    why = hold.probe_passed(KEY, True, 130.0)
    assert "froze 30s ago" in why and "60s" in why
    assert KEY in hold  # still held: the next probe is judged again


def test_a_quiet_hold_and_the_freeze_check_end_it() -> None:
    hold = StallHold(hold=60.0, unchecked_hold=300.0)
    hold.stalled(KEY, 100.0)
    assert hold.probe_passed(KEY, True, 130.0)
    assert hold.probe_passed(KEY, True, 160.0) == ""
    assert KEY not in hold  # forgotten: the route is judged by probes alone again
    hold.stalled(KEY, 500.0)  # ... until it freezes again
    assert hold.probe_passed(KEY, True, 510.0)


def test_each_new_live_freeze_starts_the_wait_again() -> None:
    hold = StallHold(hold=60.0)
    for now in (0.0, 50.0, 100.0, 150.0):  # live connections keep freezing between probes
        hold.stalled(KEY, now)
        assert hold.probe_passed(KEY, True, now + 40.0)
    assert hold.probe_passed(KEY, True, 209.0)
    assert hold.probe_passed(KEY, True, 210.0) == ""


def test_a_probe_that_could_not_check_for_a_freeze_needs_the_longer_hold() -> None:
    hold = StallHold(hold=60.0, unchecked_hold=300.0)
    hold.stalled(KEY, 0.0)
    assert "could not check" in hold.probe_passed(KEY, False, 200.0)
    assert hold.probe_passed(KEY, False, 300.0) == ""


def test_holds_are_per_service_and_route_and_forgotten_with_the_route() -> None:
    hold = StallHold(hold=60.0)
    hold.stalled(KEY, 0.0)
    hold.stalled(("whatsapp", "direct"), 0.0)
    hold.stalled(("telegram", "doh"), 0.0)
    assert hold.probe_passed(("signal", "direct"), True, 1.0) == ""
    hold.forget("direct")
    assert KEY not in hold and ("whatsapp", "direct") not in hold
    assert ("telegram", "doh") in hold


def passing(freeze_checked: bool | None = True) -> ProbeResult:
    target = TargetResult("tls://web.telegram.org:443", latency_ms=42.0)
    target.freeze_checked = freeze_checked
    return ProbeResult("telegram", "direct", "direct", [target])


def test_the_health_book_keeps_a_live_stall_over_a_passing_probe() -> None:
    book = HealthBook()
    book.record_stall("telegram", "direct", "frozen_after_16KB", "words")
    assert not book.record_probe(passing())  # right after: held
    health = book.get("telegram", "direct")
    assert (health.ok, health.failure, health.source) == (False, "stalled", "connection")
    assert health.latency_ms == 42.0
    assert "a probe passed" in book.stall_detail("telegram", "direct")
    assert book.record_probe(passing()) is False  # the next interval's probe too
    # A failing probe is taken at once (it fails either way), and the hold stays.
    failed = passing()
    failed.targets[0].fail(Failure.TIMEOUT, Op.CONNECT, "no answer")
    assert book.record_probe(failed)
    assert book.get("telegram", "direct").failure == Failure.TIMEOUT.value
    assert not book.record_probe(passing())


def test_the_health_book_takes_the_probe_after_a_quiet_hold() -> None:
    book = HealthBook()
    book.stall_hold = StallHold(hold=0.0, unchecked_hold=3600.0)
    book.record_stall("telegram", "direct", "frozen_after_16KB", "words")
    assert not book.record_probe(passing(freeze_checked=False))  # no freeze check: held
    assert book.record_probe(passing())
    health = book.get("telegram", "direct")
    assert (health.ok, health.source) == (True, "probe")
    assert book.stall_detail("telegram", "direct") == "words"  # the last stall, for the record
    assert book.record_probe(passing(freeze_checked=None))  # no longer held


def test_a_route_without_a_live_stall_takes_every_probe() -> None:
    book = HealthBook()
    assert book.record_probe(passing(freeze_checked=None))
    assert book.get("telegram", "direct").ok


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    draw=st.binary(min_size=22, max_size=22),
    draw_1=st.binary(min_size=21, max_size=21),
    draw_2=st.binary(min_size=9, max_size=9 + 8 * 64),
)
def test_record_streams_cut_anywhere_and_any_bytes(draw, draw_1, draw_2) -> None:
    records_cut_anywhere_end_at_a_boundary(draw)
    a_stream_cut_inside_a_record_is_mid_record(draw_1)
    any_bytes_are_read_without_error(draw_2)
