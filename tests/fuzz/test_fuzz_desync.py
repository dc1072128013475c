"""Property tests for the packet layers (transports/desync.py): the first bytes of a
connection come from the client, so for any bytes, written in any pieces, each trick must
deliver exactly those bytes to the server (the decoy overwritten, the urgent byte taken out
by the server's TCP) and never raise; the server-name finder must never raise and never
point outside the bytes it was given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from tests.fuzz.test_fuzz_tlsfrag import _mutated_hello
from tests.support.tls import client_hello, record
from tests.unit.test_desync import Inner, Log, RecordingSocket, received
from transports.desync import Cut, Desync, DesyncStream, Trick, server_name_in_stream
from transports.tlsfrag import Fragmenting, fragment_client_hello

HELLOS = [record(client_hello(h)) for h in (b"web.telegram.org", b"t.me", b"x")]


def _case(data: bytes) -> tuple[Desync, bytes, list[int], bytes]:
    """A trick, the first bytes (a hello, a mutated one, or any), how they are written, and
    what follows: all decoded from one draw (tests/fuzz/strategies.py says why)."""
    c = Choices(data)
    trick = c.pick(list(Trick))
    cut = Cut(sni=True) if c.chance(40) and trick is not Trick.FAKE else Cut(1 + c.size(200))
    if trick is Trick.FAKE and c.chance(50):
        cut = None
    desync = Desync(trick, cut, None if trick is Trick.OOB else 1 + c.byte() % 255)
    kind = c.pick(["hello", "mutated", "raw"])
    if kind == "hello":
        first = c.pick(HELLOS)
    elif kind == "mutated":
        first = _mutated_hello(c.take(c.size(64)))
    else:
        first = c.take(c.size(120))
    pieces = [1 + c.size(40) for _ in range(c.size(6))]
    return desync, first, pieces, c.take(c.size(30))


def the_server_gets_exactly_what_was_written(case: bytes) -> None:
    desync, data, pieces, later = _case(case)
    log = Log()
    sock = RecordingSocket(log)
    stream = DesyncStream(Inner(log), desync, sockets=lambda inner: sock, random_bytes=bytes)
    pos = 0
    for size in pieces:
        stream.write(data[pos : pos + size])
        pos += size
    stream.write(data[pos:])
    stream.write(later)
    stream.write_eof()
    assert received(log) == data + later
    assert sock.ttl == 64  # restored, whatever happened
    sends = [e for e in log if e[0] in ("send", "send_shared")]
    assert len(sends) <= 1  # one trick, once
    if sends and desync.trick is not Trick.OOB:
        assert sends[0][2] == desync.ttl


def _stream_start(raw: bytes) -> bytes:
    """Any bytes, or (first byte odd) a hello mutated by the rest: one draw."""
    return _mutated_hello(raw[1:65]) if raw[:1] and raw[0] & 1 else raw[1:]


def the_server_name_finder_stays_inside_what_it_was_given(data: bytes) -> None:
    span = server_name_in_stream(data)
    if span is not None:
        start, middle, end = span
        assert 0 <= start <= middle < end <= len(data)


def the_name_is_found_however_tlsfrag_cut_it(data: bytes) -> None:
    c = Choices(data)
    offsets = [1 + c.size(59) for _ in range(c.size(3))]
    host = bytes(b % 26 + 97 for b in c.take(1 + c.size(29))) or b"a"  # letters: a valid name
    hello = record(client_hello(host))
    wire = b"".join(fragment_client_hello(hello, Fragmenting(tuple(offsets), sni=True)))
    span = server_name_in_stream(wire)
    assert span is not None
    start, _, end = span
    # the payload bytes between the two offsets, record headers left out, are the name
    payload = bytearray()
    pos = 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        body = range(pos + 5, pos + 5 + length)
        payload += bytes(wire[i] for i in body if start <= i < end)
        pos += 5 + length
    assert payload == host


# The server-name finder's two properties share each draw (tests/fuzz/strategies.py: a draw
# costs more than the checks): the bytes as a stream's start (any, or a mutated hello), and
# as a name and the offsets tlsfrag cuts its hello at.
def the_server_name_finder_on_any_start_and_on_cut_hellos(raw: bytes) -> None:
    the_server_name_finder_stays_inside_what_it_was_given(_stream_start(raw))
    the_name_is_found_however_tlsfrag_cut_it(raw[:40])


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    case=st.binary(max_size=200),
    raw=st.binary(max_size=201),
)
def test_the_tricks_and_the_server_name_finder(case, raw) -> None:
    the_server_gets_exactly_what_was_written(case)
    the_server_name_finder_on_any_start_and_on_cut_hellos(raw)
