"""Property tests for the ClientHello rewrite (transports/tlsfrag.py): the first bytes of every
connection through a `tlsfrag` route come from the client, so any byte string must give either
records that reassemble to exactly what the client wrote, or those bytes unchanged; never an
exception, and never a lost or altered byte.

Inputs are raw bytes and mutations of well-formed ClientHellos (a byte changed, inserted or
cut off, lengths included), so the parser is driven past its first checks as well."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
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
    for _ in range(c.size(3)):
        where = (c.byte() << 8 | c.byte()) % len(wire)
        action = c.pick(["set", "insert", "cut"])
        if action == "set":
            wire[where] = c.byte()
        elif action == "insert":
            wire.insert(where, c.byte())
        else:
            del wire[where:]
            if not wire:
                break
    return bytes(wire)


first_bytes = st.one_of(st.binary(max_size=120), st.binary(max_size=64).map(_mutated_hello))
how = st.builds(
    Fragmenting,
    offsets=st.lists(st.integers(1, 200), max_size=3).map(tuple),
    sni=st.booleans(),
    segments=st.booleans(),
)


@given(st.binary(max_size=64).map(_mutated_hello))
def test_server_name_span_stays_inside(hello: bytes) -> None:
    span = server_name_span(hello[5:])
    if span is not None:
        start, end = span
        assert 0 < start < end <= len(hello) - 5


@given(first_bytes, how)
def test_split_records_reassemble_or_bytes_pass_unchanged(data: bytes, how: Fragmenting) -> None:
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


@given(first_bytes, how, st.lists(st.integers(0, 130), max_size=4))
def test_stream_writes_the_same_whatever_the_chunking(data, how, cuts) -> None:
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
