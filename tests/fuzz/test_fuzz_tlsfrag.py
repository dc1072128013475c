"""Property tests for the ClientHello rewrite (transports/tlsfrag.py): the first bytes of every
connection through a `tlsfrag` route come from the client, so any byte string must give either
records that reassemble to exactly what the client wrote, or those bytes unchanged; never an
exception, and never a lost or altered byte.

Inputs are raw bytes and mutations of well-formed ClientHellos (a byte changed, inserted or
cut off, lengths included), so the parser is driven past its first checks as well."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices, edit_bytes
from tests.support.tls import client_hello, read_records, record
from tests.unit.scripted import ScriptedStream
from transports.tlsfrag import Fragmenting, TlsFragStream, fragment_client_hello, server_name_span


def _mutated_hello(data: bytes) -> bytes:
    c = Choices(data)
    host = c.take(c.size(40)) if c.chance(90) else None
    extra = b"\x00\x2b\x00\x03\x02\x03\x04" if c.chance(30) else b""
    wire = bytearray(
        record(client_hello(host, extra)) + (c.take(c.size(8)) if c.chance(20) else b"")
    )
    return bytes(edit_bytes(c, wire, c.size(3), wide=True))


# How to cut, how the client writes, and its first bytes, all decoded from one draw (a
# strategy per field cost three times as much). A fixed head of HEAD bytes:
#   0      number of offsets (0-3)   1-3  offsets, each 1-200
#   4      flags: sni, segments, mutated hello (else raw bytes)
#   5      number of write cuts (0-4)  6-9  cuts, each 0-130
# then raw bytes (up to 120, so lengths past every offset and cut) or the seed of a mutated
# ClientHello (up to 64 bytes, as before).
HEAD = 10


def _case(draw: bytes) -> tuple[bytes, Fragmenting, list[int]]:
    c = Choices(draw[:HEAD])
    count = c.byte() % 4
    offsets = tuple(1 + c.byte() % 200 for _ in range(3))[:count]
    flags = c.byte()
    how = Fragmenting(offsets=offsets, sni=bool(flags & 1), segments=bool(flags & 2))
    count = c.byte() % 5
    cuts = [c.byte() % 131 for _ in range(4)][:count]
    rest = draw[HEAD:]
    data = _mutated_hello(rest[:64]) if flags & 4 else rest
    return data, how, cuts


cases = st.binary(min_size=HEAD, max_size=HEAD + 120).map(_case)


def server_name_span_stays_inside(hello: bytes) -> None:
    span = server_name_span(hello[5:])
    if span is not None:
        start, end = span
        assert 0 < start < end <= len(hello) - 5


def check_split(data: bytes, how: Fragmenting) -> None:
    chunks = fragment_client_hello(data, how)
    if chunks is None:
        # Waiting is only right for what may still become a complete first TLS record.
        assert data[:1] in (b"", b"\x16") and data[1:2] in (b"", b"\x03")
        assert len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big")
        return
    if chunks == [data]:
        return
    end = 5 + int.from_bytes(data[3:5], "big")
    rest = data[end:]
    records_part = b"".join(chunks[:-1] if rest else chunks)
    assert not rest or chunks[-1] == rest
    records = read_records(records_part)
    assert len(records) >= 2
    assert all(t == data[0] and v == data[1:3] and f for t, v, f in records)
    assert b"".join(f for _, _, f in records) == data[5:end]


def check_stream(data: bytes, how: Fragmenting, cuts: list[int]) -> None:
    """Written in any number of pieces, the wrapper sends what the one-shot rewrite gives
    (or the bytes unchanged, when they never complete a record)."""
    inner = ScriptedStream()
    stream = TlsFragStream(inner, how)
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        stream.write(data[previous:cut])
        previous = max(previous, cut)
    stream.close()
    expected = fragment_client_hello(data, how) or [data]
    assert bytes(inner.written) == b"".join(expected)


def split_records_reassemble_or_bytes_pass_unchanged(
    case: tuple[bytes, Fragmenting, list[int]],
) -> None:
    """The one-shot rewrite gives records that reassemble to the client's bytes (or the
    bytes unchanged); and the stream wrapper, written the same bytes in any number of
    pieces, sends exactly what the one-shot rewrite gives."""
    data, how, cuts = case
    check_split(data, how)
    check_stream(data, how, cuts)


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    hello=st.binary(max_size=64).map(_mutated_hello),
    case=cases,
)
def test_name_spans_and_split_records(hello, case) -> None:
    server_name_span_stays_inside(hello)
    split_records_reassemble_or_bytes_pass_unchanged(case)
