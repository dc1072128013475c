"""The fronted tunnel's datagram records (transports/fronted/datagrams.py) without sockets:
the exact bytes, records cut anywhere, and what is no record."""

from __future__ import annotations

import pytest

from transports import Endpoint
from transports.fronted.datagrams import (
    ASSOCIATE,
    MAX_RECORD,
    RecordReader,
    encode_record,
    parse_body,
)
from transports.wire import ProtocolError


def test_record_bytes() -> None:
    #          length  IP4 192 .0 .2 .1  :3478   payload
    assert encode_record(Endpoint("192.0.2.1", 3478), b"hi") == bytes.fromhex(
        "0009" "01" "c0000201" "0d96" "6869"
    )  # fmt: skip
    #          length  name len "a.b"      :53   (empty payload)
    assert encode_record(Endpoint("a.b", 53), b"") == bytes.fromhex(
        "0007" "03" "03" "612e62" "0035"
    )  # fmt: skip
    v6 = encode_record(Endpoint("2001:db8::1", 443), b"x")
    assert v6[:3] == b"\x00\x14\x04" and len(v6) == 2 + 1 + 16 + 2 + 1


def test_reader_keeps_boundaries_across_cuts() -> None:
    records = [(Endpoint("192.0.2.1", 3478), b"a" * 1400), (Endpoint("stun.example", 19302), b"")]
    stream = b"".join(encode_record(a, p) for a, p in records)
    reader = RecordReader()
    got = []
    for i in range(0, len(stream), 7):
        got += reader.feed(stream[i : i + 7])
    assert got == records and reader.buffered == 0


def test_too_large_for_a_record() -> None:
    with pytest.raises(ValueError, match="larger than a record"):
        encode_record(Endpoint("192.0.2.1", 1), bytes(MAX_RECORD))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"\x02" + bytes(6), "unknown address type 2"),
        (b"\x01\x7f\x00", "ends inside"),
        (b"\x03\x00\x00\x35", "names no host"),
        (b"\x03\x03a/b\x00\x35", "characters"),
        (b"\x01\xc0\x00\x02\x01\x00\x00", "port 0"),
    ],
)
def test_bodies_that_are_no_datagram(body: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse_body(body)


def test_associate_never_resolves() -> None:
    assert ASSOCIATE.host.endswith(".invalid")  # RFC 6761: no relay can reach it by name
