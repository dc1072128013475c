"""Property tests for the records that carry datagrams in the fronted tunnel
(transports/fronted/datagrams.py), which a relay reads from any client and a client from
its relay:

- any bytes, fed in any pieces, give datagrams or ProtocolError; nothing else, and never
  more bytes kept than were fed;
- records of any datagrams, cut anywhere, parse back to the same datagrams in order (and a
  batch of them, as the writers send it, is those records back to back).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices, split_tail
from transports import Endpoint
from transports.fronted.datagrams import RecordBatch, RecordReader, encode_record, parse_body
from transports.wire import ProtocolError


def _address(c: Choices) -> Endpoint:
    kind = c.pick(("v4", "v6", "name"))
    port = max(1, c.byte() << 8 | c.byte())
    if kind == "v4":
        return Endpoint(str(ipaddress.IPv4Address(c.take(4).ljust(4, b"\0"))), port)
    if kind == "v6":
        return Endpoint(str(ipaddress.IPv6Address(c.take(16).ljust(16, b"\0"))), port)
    return Endpoint(c.hostname(60), port)


def _pieces(data: bytes, cuts: bytes) -> list[bytes]:
    pieces, start = [], 0
    for cut in cuts:
        end = min(len(data), start + cut)
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return pieces


def any_bytes_give_datagrams_or_protocol_error(raw: bytes) -> None:
    data, cuts = split_tail(raw, 8)
    reader = RecordReader()
    fed = 0
    try:
        for piece in _pieces(data, cuts):
            fed += len(piece)
            for address, payload in reader.feed(piece):
                assert isinstance(address, Endpoint) and address.port > 0
                assert isinstance(payload, bytes)
            assert reader.buffered <= fed
    except ProtocolError as exc:
        error: ProtocolError | None = exc
    else:
        error = None
    assert error is None or str(error)
    try:
        parse_body(data)
    except ProtocolError as exc:
        error = exc
    else:
        error = None
    assert error is None or str(error)


def records_parse_back_whatever_the_cuts(raw: bytes) -> None:
    data, cuts = split_tail(raw, 8)
    c = Choices(data)
    datagrams = []
    for _ in range(c.byte() % 5):
        datagrams.append((_address(c), c.take(c.byte())))
    stream = b"".join(encode_record(a, p) for a, p in datagrams)
    batch = RecordBatch()  # what the writers send: the same records back to back
    for address, payload in datagrams:
        batch.add(address, payload)
    assert batch.take() == stream
    reader = RecordReader()
    got = []
    for piece in _pieces(stream, cuts):
        got.extend(reader.feed(piece))
    assert got == datagrams
    assert reader.buffered == 0


# Both properties share each draw (tests/fuzz/strategies.py: a draw costs more than the
# checks): its last byte says how many of the bytes before it are where the stream is cut;
# the rest is the stream as it is, and decodes the datagrams of a valid one.
@given(st.binary(max_size=309))
def test_any_bytes_and_valid_records_whatever_the_cuts(raw: bytes) -> None:
    any_bytes_give_datagrams_or_protocol_error(raw)
    records_parse_back_whatever_the_cuts(raw)
