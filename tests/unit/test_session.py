"""The capped mode's session layer (transports/fronted/session.py): one byte stream across
many short carriers. Unit tests, and the property that random loss (a carrier freezing with
segments in flight), reordering across carriers and duplication deliver exactly the bytes
written, in order, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from transports.fronted.session import (
    END,
    FIN,
    HEADER,
    INITIAL_LIMIT,
    PING,
    Session,
    encode_segment,
    parse_segment,
)
from transports.wire import NeedMore, ProtocolError


def segments(data: bytes) -> list:
    out, start = [], 0
    while start < len(data):
        used, segment = parse_segment(data, start)
        out.append(segment)
        start += used
    return out


def deliver(data: bytes, to: Session) -> None:
    for segment in segments(data):
        to.receive(segment)


def test_a_segment_round_trips_and_needs_all_its_bytes() -> None:
    wire = encode_segment(PING | END, 5, 7, 9, b"abc")
    assert parse_segment(wire) == (len(wire), parse_segment(wire)[1])
    segment = parse_segment(wire)[1]
    assert (segment.flags, segment.offset, segment.ack, segment.limit, segment.payload) == (
        PING | END, 5, 7, 9, b"abc",
    )  # fmt: skip
    for cut in range(len(wire)):
        with pytest.raises(NeedMore):
            parse_segment(wire[:cut])


@pytest.mark.parametrize(
    "wire",
    [
        bytes([0x80]) + bytes(HEADER.size - 1),  # unknown flags
        HEADER.pack(0, 1 << 63, 0, 0, 0),  # an offset no stream reaches
        HEADER.pack(0, 0, 0, 0, 0xFFFF),  # too long
    ],
)
def test_bytes_that_are_no_segment(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_segment(wire)


def test_bytes_cross_and_are_acknowledged() -> None:
    a, b = Session(), Session()
    a.write(b"hello")
    deliver(a.outgoing(1000), b)
    assert b.read() == b"hello"
    assert a.unacked == 5
    deliver(b.outgoing(1000), a)  # the acknowledgement
    assert a.unacked == 0 and a.buffered == 0


def test_a_lost_carrier_costs_a_retransmission_and_duplicates_are_dropped() -> None:
    a, b = Session(max_payload=4), Session()
    a.write(b"0123456789")
    lost = a.outgoing(HEADER.size * 2 + 8)  # two segments: "0123", "4567"
    assert len(segments(lost)) == 2
    a.rewind()
    deliver(a.outgoing(10_000), b)
    deliver(lost, b)  # arrives late, after all
    assert b.read() == b"0123456789"


def test_out_of_order_segments_wait_for_the_gap() -> None:
    a, b = Session(max_payload=4), Session()
    a.write(b"abcdefgh")
    first, second = segments(a.outgoing(10_000))
    b.receive(second)
    assert b.read() == b""
    b.receive(first)
    assert b.read() == b"abcdefgh"


def test_the_budget_bounds_what_goes_out() -> None:
    a = Session()
    a.write(b"x" * 10_000)
    out = a.outgoing(1000)
    assert HEADER.size < len(out) <= 1000
    assert a.outgoing(HEADER.size - 1) == b""


def test_the_window_stops_the_sender_until_the_reader_reads() -> None:
    a, b = Session(), Session()
    a.write(b"x" * (INITIAL_LIMIT + 100))
    deliver(a.outgoing(1 << 20), b)
    assert a.sent == INITIAL_LIMIT and a.outgoing(1 << 20) == b""
    assert len(b.read()) == INITIAL_LIMIT
    deliver(b.outgoing(1000), a)  # an acknowledgement that opens the window
    deliver(a.outgoing(1 << 20), b)
    assert len(b.read()) == 100


def test_a_fin_past_the_window_waits_and_says_there_is_nothing_to_send() -> None:
    a = Session()
    a.write(b"x" * (INITIAL_LIMIT + 10))
    a.write_eof()
    a.outgoing(1 << 20)
    assert not a.pending() and a.outgoing(1 << 20) == b""  # a sender loop would not spin


def test_beyond_the_window_is_a_protocol_error() -> None:
    b = Session()
    with pytest.raises(ProtocolError):
        b.receive(parse_segment(encode_segment(0, b.limit, 0, 0, b"x"))[1])
    with pytest.raises(ProtocolError):
        b.receive(parse_segment(encode_segment(0, 0, 5, 0))[1])  # acks bytes never sent


def test_fin_ends_the_stream_once_everything_is_in() -> None:
    a, b = Session(), Session()
    a.write(b"last words")
    a.write_eof()
    out = segments(a.outgoing(10_000))
    assert out[-1].flags & FIN
    for segment in reversed(out):
        b.receive(segment)
    assert b.read() == b"last words" and b.at_eof
    deliver(b.outgoing(1000), a)
    assert a.fin_acked
    b.write_eof()
    deliver(b.outgoing(1000), a)
    deliver(a.outgoing(1000), b)
    assert a.finished and b.finished


def test_ping_asks_for_an_acknowledgement() -> None:
    a, b = Session(), Session()
    deliver(a.outgoing(1000, flags=PING), b)
    assert segments(b.outgoing(1000))  # an acknowledgement, though nothing was sent


# --- the property ---------------------------------------------------------------------------


class Carrier:
    """Segments in flight, each way, on one carrier: delivered in order, or lost together."""

    def __init__(self) -> None:
        self.queues: dict[int, list] = {0: [], 1: []}


def _run(data: bytes) -> None:
    choose = Choices(data)
    payloads = [choose.stretch(600, seed=40), choose.stretch(600, seed=40)]
    sides = [Session(max_payload=32 + choose.size(255)), Session(max_payload=32 + choose.size(255))]
    written = [0, 0]
    got = [bytearray(), bytearray()]
    carriers = [Carrier()]
    replays: list[tuple[int, object]] = []

    def send(side: int, budget: int) -> None:
        for segment in segments(sides[side].outgoing(budget)):
            carriers[-1].queues[side].append(segment)

    def take(side: int) -> None:
        got[side] += sides[side].read()

    for _ in range(choose.size(40)):
        action = choose.byte() % 8
        side = choose.byte() % 2
        if action == 0 and written[side] < len(payloads[side]):  # the application writes
            n = 1 + choose.size(255)
            sides[side].write(payloads[side][written[side] : written[side] + n])
            written[side] = min(len(payloads[side]), written[side] + n)
            if written[side] == len(payloads[side]) and choose.chance(50):
                sides[side].write_eof()
        elif action == 1:  # a side sends within a carrier's budget
            send(side, HEADER.size + choose.size(255) * 4)
        elif action in (2, 3):  # a carrier delivers some of what it carries, in order
            carrier = choose.pick(carriers)
            queue = carrier.queues[side]
            for _ in range(min(len(queue), 1 + choose.size(8))):
                segment = queue.pop(0)
                sides[1 - side].receive(segment)
                if choose.chance(10):
                    replays.append((1 - side, segment))
        elif action == 4:  # a carrier freezes: all it carries is lost; the next is opened
            carrier = choose.pick(carriers)
            carrier.queues = {0: [], 1: []}
            carriers.append(Carrier())
            sides[0].rewind()
            sides[1].rewind()
        elif action == 5:  # a newer carrier (the old one keeps what it carries)
            carriers.append(Carrier())
        elif action == 6 and replays:  # an old duplicate turns up
            to, segment = replays.pop(choose.size(len(replays) - 1) if len(replays) > 1 else 0)
            sides[to].receive(segment)
        elif action == 7:
            take(side)

    # Then the carriers work: everything written arrives, whatever was lost on the way.
    for side in (0, 1):
        if written[side] < len(payloads[side]):
            sides[side].write(payloads[side][written[side] :])
        if not sides[side]._fin_wanted:
            sides[side].write_eof()
    for carrier in carriers:  # what is still in flight arrives or is lost
        for side in (0, 1):
            for segment in carrier.queues[side]:
                if choose.chance(50):
                    sides[1 - side].receive(segment)
    for _ in range(10_000):
        if sides[0].finished and sides[1].finished:
            break
        quiet = True
        for side in (0, 1):
            out = sides[side].outgoing(4000)
            if out:
                quiet = False
                deliver(out, sides[1 - side])
            take(side)
        if quiet:  # nothing to say, yet not done: a timeout, everything unacknowledged again
            sides[0].rewind()
            sides[1].rewind()
            sides[0].ack_now()
    else:
        raise AssertionError("the sessions never finished")
    take(0)
    take(1)
    assert bytes(got[1]) == payloads[0]
    assert bytes(got[0]) == payloads[1]


def loss_reorder_and_duplication_deliver_exactly_the_bytes_in_order(data: bytes) -> None:
    _run(data)


def test_the_property_with_heavy_loss() -> None:
    import random

    rng = random.Random(7)
    for _ in range(50):
        _run(bytes(rng.randrange(256) for _ in range(400)))


# --- what a carrier's peer may send: never anything but a result, NeedMore or ProtocolError --


def _verdict(parse, data: bytes):
    try:
        return ("ok", parse(data))
    except NeedMore:
        return ("more", None)
    except ProtocolError:
        return ("error", None)


def carrier_parsers_take_any_bytes(raw: bytes) -> None:
    from transports.fronted.capped import (
        parse_confirm,
        parse_hello,
        parse_hello_early,
        parse_welcome,
    )

    cut = raw[0] % len(raw) if raw else 0  # one draw: the bytes, and where more start
    data, more = raw[:cut], raw[cut:]

    for parse in (parse_segment, parse_hello, parse_hello_early, parse_welcome, parse_confirm):
        verdict, value = _verdict(parse, data)
        later, later_value = _verdict(parse, data + more)
        if verdict == "ok":
            assert (later, later_value) == (verdict, value)  # more bytes change nothing
        elif verdict == "error":
            assert later == "error"


def test_hello_and_welcome_round_trip() -> None:
    from transports.fronted.capped import (
        OK,
        encode_hello,
        encode_welcome,
        parse_hello,
        parse_welcome,
    )

    ident = bytes(range(16))
    assert parse_hello(encode_hello(ident, new=True, allowance=9000)) == (22, ident, True, 9000)
    assert parse_welcome(encode_welcome(OK)) == (2, OK)
    with pytest.raises(ProtocolError):
        parse_hello(encode_hello(ident, new=False, allowance=10))  # no room for a segment


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    data=st.binary(max_size=200),
    raw=st.binary(max_size=80),
)
def test_delivery_under_loss_and_carrier_parsers(data, raw) -> None:
    loss_reorder_and_duplication_deliver_exactly_the_bytes_in_order(data)
    carrier_parsers_take_any_bytes(raw)


def test_an_early_hello_and_its_confirm_round_trip() -> None:
    from transports.fronted.capped import (
        encode_confirm,
        encode_hello,
        parse_confirm,
        parse_hello,
        parse_hello_early,
    )

    ident = bytes(range(16))
    early = encode_hello(ident, new=False, allowance=7000, early=True)
    assert parse_hello_early(early) == (22, ident, False, 7000, True)
    plain = encode_hello(ident, new=True, allowance=9000)
    assert parse_hello_early(plain) == (22, ident, True, 9000, False)
    with pytest.raises(ProtocolError):
        parse_hello(early)  # a detour-carrier/1 relay never gets one; were it sent: refused
    assert parse_confirm(encode_confirm(9300) + b"more") == (4, 9300)
    with pytest.raises(NeedMore):
        parse_confirm(encode_confirm(9300)[:3])
