"""The multiplexed tunnel (transports/fronted/mux.py): its frames, and two sessions talking
over an in-memory pipe -- streams, half-close, flow control, resets and protocol errors."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from tests.support.memory import MemoryStream, memory_pipe
from tests.support.waiting import until
from transports import DialError, Endpoint, Failure, Op
from transports.fronted import mux
from transports.fronted.mux import (
    DATA,
    FIN,
    GOAWAY,
    MAX_DATA,
    OPEN,
    PING,
    WINDOW,
    WINDOW_SIZE,
    Frame,
    MuxSession,
    MuxStream,
    encode_frame,
    encode_frame_into,
    parse_frame,
)
from transports.fronted.protocol import NeedMore, ProtocolError, encode_failure, encode_request

# --- frames -----------------------------------------------------------------------------------


def test_a_frame_round_trips_and_needs_all_its_bytes() -> None:
    wire = encode_frame(DATA, 7, b"hello")
    assert len(wire) == 9 + 5
    assert parse_frame(wire + b"next") == (14, Frame(DATA, 7, b"hello"))
    assert parse_frame(b"xx" + wire, 2) == (14, Frame(DATA, 7, b"hello"))
    for cut in range(len(wire)):
        with pytest.raises(NeedMore):
            parse_frame(wire[:cut])


def test_a_frame_built_in_a_reused_buffer_is_the_same_frame() -> None:
    buf = bytearray()
    for size in (70_000, 20_000, 5, MAX_DATA, 0, 100_000):
        payload = bytes([size % 251]) * size
        frame = encode_frame_into(buf, DATA, 3, payload)
        assert bytes(frame) == encode_frame(DATA, 3, payload)
        assert frame.obj is buf  # in the buffer, which only ever grows
        frame.release()
    assert len(buf) == 9 + MAX_DATA
    held = encode_frame_into(buf, DATA, 3, b"x" * 10)
    with pytest.raises(BufferError):  # the session then takes a new buffer
        encode_frame_into(buf, DATA, 3, b"x" * (MAX_DATA + 1))
    held.release()


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (struct.pack("!BII", 99, 1, 0), "unknown frame type"),
        (struct.pack("!BII", DATA, 1, MAX_DATA + 1), "at most"),
        (struct.pack("!BII", OPEN, 1, 5000), "at most"),
        (struct.pack("!BII", DATA, 0, 1), "for stream 0"),
        (struct.pack("!BII", PING, 3, 8), "for stream 3"),
        (struct.pack("!BII", GOAWAY, 1, 0), "for stream 1"),
        (struct.pack("!BII", WINDOW, 1, 3), "of 3 bytes"),
        (struct.pack("!BII", PING, 0, 4), "of 4 bytes"),
        (struct.pack("!BII", FIN, 1, 1), "with a payload"),
        (struct.pack("!BII", mux.BLOCKED, 1, 4), "with a payload"),
    ],
)
def test_malformed_frames_are_refused_from_the_header(wire: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse_frame(wire)  # before the payload arrives: a bad header is never waited on


# --- sessions ---------------------------------------------------------------------------------

Opened = tuple[MuxStream, Endpoint]


class Pair:
    """A client session and a relay session over a memory pipe. The relay side answers each
    OPEN by `answer` (accept by default) and hands the stream to the test."""

    def __init__(self, client_end: MemoryStream, relay_end: MemoryStream) -> None:
        self.client_end, self.relay_end = client_end, relay_end
        self.opened: asyncio.Queue[Opened] = asyncio.Queue()
        self.answer: str | bytes = "accept"
        self.client = MuxSession(client_end, name="client")
        self.relay = MuxSession(relay_end, on_open=self._on_open, name="relay")

    async def _on_open(self, stream: MuxStream, target: Endpoint) -> None:
        if self.answer == "accept":
            self.relay.accept(stream)
            await self.opened.put((stream, target))
        elif isinstance(self.answer, bytes):
            self.relay.refuse(stream, self.answer)
        # "silent": never answer

    async def connect(self, port: int = 443) -> tuple[MuxStream, MuxStream]:
        client = await self.client.open(Endpoint("service.test", port))
        relay, target = await asyncio.wait_for(self.opened.get(), 5)
        assert target == Endpoint("service.test", port)
        return client, relay


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    a, b = memory_pipe(limit=1 << 20)
    p = Pair(a, b)
    yield p
    await p.client.aclose()
    await p.relay.aclose()


async def read_all(stream: MuxStream) -> bytes:
    out = bytearray()
    while chunk := await stream.read(100_000):
        out += chunk
    return bytes(out)


async def test_streams_carry_bytes_both_ways_with_half_close(pair: Pair) -> None:
    client, relay = await pair.connect()
    client.write(b"ping")
    client.write_eof()
    await client.drain()
    assert await read_all(relay) == b"ping"
    relay.write(b"pong" * 1000)  # the other direction still flows after the half-close
    relay.write_eof()
    await relay.drain()
    assert await read_all(client) == b"pong" * 1000
    client.close()
    relay.close()
    await asyncio.sleep(0)
    assert not pair.client.streams and not pair.relay.streams


async def test_many_streams_share_the_session_and_a_stalled_one_blocks_none(pair: Pair) -> None:
    stalled_client, stalled_relay = await pair.connect()
    # The relay sends the stalled stream more than its window: the rest waits at the relay.
    stalled_relay.write(b"x" * (WINDOW_SIZE + 100_000))
    drained = asyncio.ensure_future(stalled_relay.drain())
    await until(lambda: stalled_client.flow.buffered >= WINDOW_SIZE)  # the window arrived
    assert not drained.done()
    assert stalled_client.flow.buffered == WINDOW_SIZE  # never more than the window in flight
    assert stalled_client.flow.window == WINDOW_SIZE  # a reader that falls behind never grows it
    # Meanwhile twenty other streams open and finish.
    for i in range(20):
        client, relay = await pair.connect(1000 + i)
        relay.write(b"%d" % i)
        relay.write_eof()
        assert await read_all(client) == b"%d" % i
    # Reading the stalled stream lets the rest through.
    assert len(await read_all_until(stalled_client, WINDOW_SIZE + 100_000)) == (
        WINDOW_SIZE + 100_000
    )
    await asyncio.wait_for(drained, 5)


async def test_large_frames_from_a_reused_buffer_arrive_intact() -> None:
    """Over a stream that copies each write (as TLS does), a session builds its large frames
    in one buffer: every frame must arrive as written, whatever its size."""
    a, b = memory_pipe(limit=1 << 20)
    a.copies_writes = b.copies_writes = True  # type: ignore[attr-defined]  # MemoryStream copies
    p = Pair(a, b)
    assert p.client._scratch is not None and p.relay._scratch is not None
    try:
        client, relay = await p.connect()
        sizes = [MAX_DATA, 20_000, 100, MAX_DATA - 7, 70_000, 300_000]
        sent = b"".join(bytes([i + 1]) * size for i, size in enumerate(sizes))

        async def send() -> None:
            for i, size in enumerate(sizes):
                relay.write(bytes([i + 1]) * size)
                await relay.drain()
            relay.write_eof()

        sender = asyncio.ensure_future(send())
        assert await read_all(client) == sent
        await sender
    finally:
        await p.client.aclose()
        await p.relay.aclose()


async def read_all_until(stream: MuxStream, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = await asyncio.wait_for(stream.read(65536), 5)
        assert chunk
        out += chunk
    return bytes(out)


async def test_the_window_grows_for_a_reader_that_keeps_up(pair: Pair) -> None:
    client, relay = await pair.connect()
    size = 16 * 1024 * 1024

    async def send() -> None:
        for _ in range(size // MAX_DATA):
            relay.write(b"b" * MAX_DATA)
            await relay.drain()
        relay.write_eof()

    sender = asyncio.ensure_future(send())
    assert len(await read_all(client)) == size
    await sender
    # Doubled each time the sender reported itself blocked while the reader kept up.
    assert WINDOW_SIZE < client.flow.window <= mux.MAX_WINDOW
    assert relay.flow.window == WINDOW_SIZE  # nothing came the other way: no reason to grow


async def test_a_refusal_is_the_relays_dial_error(pair: Pair) -> None:
    pair.answer = encode_failure(DialError(Failure.CONNECTION_REFUSED, Op.CONNECT, "no"))
    with pytest.raises(DialError) as caught:
        await pair.client.open(Endpoint("service.test", 443))
    assert caught.value.failure is Failure.CONNECTION_REFUSED
    assert "at the relay" in caught.value.detail
    assert not pair.client.streams


async def test_closing_while_the_peer_sends_resets_it(pair: Pair) -> None:
    client, relay = await pair.connect()
    client.close()  # the app went away with the download still coming
    relay.write(b"y" * 1000)
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionResetError):
        relay.write(b"more")
        await relay.drain()
    assert not pair.client.streams


async def test_abort_resets_the_other_end(pair: Pair) -> None:
    client, relay = await pair.connect()
    relay.abort()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(client.read(), 5)


async def test_unread_bytes_are_not_credited_twice(pair: Pair) -> None:
    client, relay = await pair.connect()
    relay.write(b"abcdef")
    await relay.drain()
    data = await client.read(3)
    client.unread(data)
    assert await client.read(100) == b"abc"
    assert await client.read(100) == b"def"
    assert client.flow.credit + client.flow.recv_window == client.flow.window == WINDOW_SIZE


async def test_session_death_fails_every_stream_and_further_opens(pair: Pair) -> None:
    first, _ = await pair.connect()
    second, _ = await pair.connect(444)
    pair.relay_end.abort()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(first.read(), 5)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(second.read(), 5)
    await asyncio.wait_for(pair.client.ended.wait(), 5)
    with pytest.raises(DialError):
        await pair.client.open(Endpoint("service.test", 443))


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([encode_frame(DATA, 1, b"x" * 10)], id="data-for-a-stream-never-opened"),
        pytest.param(
            [encode_frame(WINDOW, 1, struct.pack("!I", 1))], id="window-for-unopened-stream"
        ),
        pytest.param([b"\x63" + b"\0" * 8], id="unknown-type"),
        pytest.param([encode_frame(GOAWAY, 0)], id="goaway-from-the-client"),
    ],
)
async def test_protocol_violations_end_the_session(pair: Pair, frames: list[bytes]) -> None:
    for frame in frames:
        pair.client_end.write(frame)
    await asyncio.wait_for(pair.relay.ended.wait(), 5)
    assert pair.relay.error is not None
    assert pair.relay.error.failure is Failure.PROXY_PROTOCOL_ERROR


async def test_data_beyond_the_window_ends_the_session(pair: Pair) -> None:
    client, relay = await pair.connect()
    chunk = b"z" * MAX_DATA
    for _ in range(WINDOW_SIZE // MAX_DATA + 1):  # bypassing the stream's own accounting
        pair.relay_end.write(encode_frame(DATA, client.id, chunk))
    await asyncio.wait_for(pair.client.ended.wait(), 5)
    assert "beyond the window" in str(pair.client.error)


async def test_an_id_opened_twice_ends_the_session(pair: Pair) -> None:
    await pair.connect()
    pair.client_end.write(encode_frame(OPEN, 1, encode_request(Endpoint("a.test", 1))))
    await asyncio.wait_for(pair.relay.ended.wait(), 5)
    assert "opened again" in str(pair.relay.error)


async def test_goaway_refuses_new_streams_and_keeps_open_ones(pair: Pair) -> None:
    client, relay = await pair.connect()
    pair.relay.go_away()
    await until(lambda: pair.client.going_away)
    assert not pair.client.usable(100)
    relay.write(b"still here")
    relay.write_eof()
    assert await read_all(client) == b"still here"


async def test_a_silent_tunnel_is_found_dead_by_the_keepalive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = memory_pipe()
    session = MuxSession(a, keepalive=0.2, name="client")  # nobody answers at the far end
    try:
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.error is not None
        assert session.error.failure is Failure.TIMEOUT
    finally:
        await session.aclose()
        b.close()


async def test_a_live_tunnel_answers_the_keepalive(pair: Pair) -> None:
    a, b = memory_pipe()
    client = MuxSession(a, keepalive=0.1, name="client")
    relay = MuxSession(b, on_open=pair._on_open, name="relay")
    try:
        await asyncio.sleep(0.5)
        assert client.alive and relay.alive
    finally:
        await client.aclose()
        await relay.aclose()


def test_a_full_frame_is_one_tls_write() -> None:
    from transports.tls import WRITE_CHUNK

    assert mux.MAX_DATA + mux.HEADER.size <= WRITE_CHUNK  # so one WebSocket message
