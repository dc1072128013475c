"""The fronted tunnel's datagram records (transports/fronted/datagrams.py) without sockets:
the exact bytes, records cut anywhere, what is no record, and their batching (RecordBatch's
decisions turn by turn; RecordWriter over a stand-in stream)."""

from __future__ import annotations

import asyncio

import pytest

from transports import Endpoint
from transports.fronted.datagrams import (
    ASSOCIATE,
    BACKLOG,
    COALESCE_BYTES,
    MAX_RECORD,
    RecordBatch,
    RecordReader,
    RecordWriter,
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


# --- batching: RecordBatch (sans-IO) and RecordWriter over a stand-in stream ----------------


def test_a_batch_is_the_records_back_to_back() -> None:
    records = [(Endpoint("192.0.2.1", 3478), b"a" * 1400), (Endpoint("x.example", 9), b"")]
    batch = RecordBatch()
    for address, payload in records:
        batch.add(address, payload)
    assert batch.count == 2 and batch.size == sum(len(encode_record(*r)) for r in records)
    data = batch.take()
    assert data == b"".join(encode_record(*r) for r in records)
    assert RecordReader().feed(data) == records  # every datagram's boundary kept
    assert batch.take() == b"" and batch.count == batch.size == 0


def test_a_batch_refuses_what_cannot_be_a_record() -> None:
    batch = RecordBatch()
    with pytest.raises(ValueError, match="larger than a record"):
        batch.add(Endpoint("192.0.2.1", 1), bytes(MAX_RECORD))
    assert batch.count == 0 and batch.take() == b""


def test_a_lone_record_is_due_at_the_next_turn() -> None:
    batch = RecordBatch(turns=8)
    batch.add(Endpoint("192.0.2.1", 1), b"x")
    assert batch.due()  # nothing came after it: no waiting (as before batching)


def test_a_batch_waits_while_records_keep_coming_then_goes() -> None:
    batch = RecordBatch(turns=3)
    target = Endpoint("192.0.2.1", 1)
    batch.add(target, b"1")
    batch.add(target, b"2")  # the same turn as the first
    assert not batch.due()  # it grew: more may be on their way
    batch.add(target, b"3")
    assert not batch.due()
    assert batch.due()  # a turn without a new record: the burst is over
    batch.take()
    batch.add(target, b"a")
    for n in range(3):  # a steady stream: at most `turns` turns of waiting
        batch.add(target, b"b")
        assert not batch.due(), n
    batch.add(target, b"c")
    assert batch.due()


def test_a_full_batch_is_due_at_once() -> None:
    batch = RecordBatch(turns=100, limit=3000)
    batch.add(Endpoint("192.0.2.1", 1), bytes(1400))
    batch.add(Endpoint("192.0.2.1", 1), bytes(1400))
    assert not batch.full
    batch.add(Endpoint("192.0.2.1", 1), bytes(1400))
    assert batch.full and batch.due()


class _Flow:
    pending = 0


class _Stream:
    """What RecordWriter uses of a MuxStream: each write kept."""

    def __init__(self) -> None:
        self.flow = _Flow()
        self.writes: list[bytes] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.writes.append(data)


async def _one_per_turn(writer: RecordWriter, n: int) -> list[tuple[Endpoint, bytes]]:
    sent = []
    for i in range(n):
        sent.append((Endpoint("192.0.2.1", 1000 + i), i.to_bytes(2, "big") * (i % 50)))
        assert writer.write(*sent[-1])
        await asyncio.sleep(0)  # one turn of the event loop
    for _ in range(20):
        await asyncio.sleep(0)
    return sent


async def test_the_writer_joins_datagrams_of_consecutive_turns() -> None:
    stream = _Stream()
    writer = RecordWriter(stream, turns=8)  # type: ignore[arg-type]
    sent = await _one_per_turn(writer, 100)
    assert len(stream.writes) <= 100 // 8 + 1  # about one write per 9 turns, not 100
    assert writer.writes == len(stream.writes)
    assert RecordReader().feed(b"".join(stream.writes)) == sent  # order and boundaries


async def test_unbatched_the_writer_writes_every_turn() -> None:
    stream = _Stream()
    writer = RecordWriter(stream, turns=0)  # type: ignore[arg-type]
    sent = await _one_per_turn(writer, 20)
    assert len(stream.writes) == 20
    assert RecordReader().feed(b"".join(stream.writes)) == sent


async def test_the_writer_drops_beyond_the_backlog_and_on_a_closed_stream() -> None:
    stream = _Stream()
    writer = RecordWriter(stream)  # type: ignore[arg-type]
    stream.flow.pending = BACKLOG + 1  # the tunnel's window took nothing for a while
    assert not writer.write(Endpoint("192.0.2.1", 1), b"x")
    stream.flow.pending = 0
    assert writer.write(Endpoint("192.0.2.1", 1), b"x")
    assert not writer.write(Endpoint("192.0.2.1", 1), bytes(MAX_RECORD))  # too large
    stream.closing = True
    assert not writer.write(Endpoint("192.0.2.1", 1), b"y")
    writer.flush()
    assert stream.writes == []  # a closed stream takes nothing


async def test_a_large_datagram_goes_out_at_once() -> None:
    stream = _Stream()
    writer = RecordWriter(stream)  # type: ignore[arg-type]
    assert writer.write(Endpoint("192.0.2.1", 1), b"small")
    assert writer.write(Endpoint("192.0.2.1", 1), bytes(COALESCE_BYTES))
    assert len(stream.writes) == 1  # without waiting for a turn: the batch is full
    payloads = [p for _, p in RecordReader().feed(stream.writes[0])]
    assert payloads == [b"small", bytes(COALESCE_BYTES)]
