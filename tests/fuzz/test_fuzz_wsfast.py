"""Property tests for the copy-saving paths of the WebSocket and MTProto layers: a masked
frame built into a reused buffer from pieces is the frame encode_frame makes of their join
(parse_frame reads it back), whatever the buffer held before; a packet splitter's pieces
join to the packets `feed` returns, however the stream is cut; a WebSocket stream that hands
out payloads as they arrive (`partial_reads`) yields the same bytes as one that waits for
whole messages, however the frames are cut; the relay's fast path for `tgws`
(transports/wsfast.py) cuts the same payload out of the frames in place, and builds one
frame per packet that reads back as the packet, however reads and writes are cut."""

from __future__ import annotations

import struct
from collections.abc import Coroutine
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from tests.unit.scripted import ScriptedStream
from transports.mtproto import PacketSplitter, Tag, encode_packet
from transports.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    WebSocketStream,
    encode_frame,
    encode_masked_into,
    parse_frame,
)
from transports.wsfast import FrameBuilder, FrameCutter

# Each property decodes its whole input from one st.binary() draw (a strategy per field
# cost twice as much): counts and sizes from a head of fixed length (so that a count does
# not move the bytes after it), the payload from the rest.


def numbers(c: Choices, low: int, high: int, most: int = 5) -> list[int]:
    """0 to `most` integers in [low, high] (either end reachable), from 1 + 2 * most bytes."""
    count = c.byte() % (most + 1)
    return [low + (c.byte() << 8 | c.byte()) % (high - low + 1) for _ in range(most)][:count]


def stretched(c: Choices, rest: bytes, limit: int) -> bytes:
    """The payload: the draw's remaining bytes as they are, or (one time in four) repeated to
    a length up to `limit` read from the head, so that long payloads and the frame header's
    length boundaries (125/126 bytes) come up as often as short ones."""
    if c.byte() % 4:
        c.byte(), c.byte()
        return rest
    n = (c.byte() << 8 | c.byte()) % (limit + 1)
    rest = rest or b"\0"
    return (rest * (n // len(rest) + 1))[:n]


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` in pieces of these sizes, the last piece the rest."""
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    return pieces


def run_now(coro: Coroutine[Any, Any, bytes]) -> bytes:
    """Run a coroutine that never waits (its stream is scripted) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited")


FRAME_HEAD = 16  # cuts 11, the buffer's previous size 2, the payload's length 3


def a_frame_built_in_a_reused_buffer_reads_back(draw: bytes) -> None:
    c = Choices(draw[:FRAME_HEAD])
    sizes = numbers(c, 1, 300)
    before = (c.byte() << 8 | c.byte()) % 501
    payload = stretched(c, draw[FRAME_HEAD:], 400)
    buf = bytearray(before)  # what the last frame left
    frame = encode_masked_into(buf, OP_BINARY, cut(payload, sizes), len(payload))
    assert frame is buf
    used, parsed = parse_frame(bytes(frame), expect_masked=True)
    assert used == len(frame) and parsed.fin and parsed.opcode == OP_BINARY
    assert bytes(parsed.payload) == payload
    reference = encode_frame(OP_BINARY, payload)  # the same head (the key is random)
    head = len(reference) - len(payload) - 4
    assert frame[:head] == reference[:head]


def pieces_join_to_the_packets(draw: bytes) -> None:
    c = Choices(draw)
    tag = c.pick([Tag.ABRIDGED, Tag.INTERMEDIATE])
    count = 1 + c.byte() % 5
    sizes = [1 + c.byte() % 120 for _ in range(5)][:count]  # 1-5 packets of 1-120 bytes
    feeds = numbers(c, 1, 300)
    scale = 4 if tag is Tag.ABRIDGED else 1
    stream = b"".join(
        encode_packet(tag, bytes([i]) * (size * scale)) for i, size in enumerate(sizes)
    )
    whole, parts = PacketSplitter(tag), PacketSplitter(tag)
    got_whole: list[bytes] = []
    got_parts: list[bytes] = []
    for piece in cut(stream, feeds):
        got_whole += [bytes(p) for p in whole.feed(piece)]
        got_parts += [b"".join(bytes(x) for x in p) for p in parts.feed_parts(piece)]
    assert got_whole == got_parts
    assert b"".join(got_parts) == stream and whole.pending == parts.pending == 0


READ_HEAD = 27  # message cuts 11, wire cuts 11, the read size, ping, the payload's length 3


def partial_reads_yield_the_same_bytes(draw: bytes) -> None:
    c = Choices(draw[:READ_HEAD])
    messages, wire_cuts = numbers(c, 1, 300), numbers(c, 1, 300)
    n, ping = 1 + c.byte() % 200, c.chance(50)
    payload = stretched(c, draw[READ_HEAD:], 300) or b"x"
    wire = b""
    for i, message in enumerate(m for m in cut(payload, messages) if m):
        if ping and i == 1:
            wire += encode_frame(OP_PING, b"hi", mask=False)
        if len(message) > 3 and i % 2:  # a fragmented message
            wire += encode_frame(OP_BINARY, message[:3], mask=False, fin=False)
            wire += encode_frame(OP_CONTINUATION, message[3:], mask=False)
        else:
            wire += encode_frame(OP_BINARY, message, mask=False)
    wire += encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask=False)

    async def read_all(partial: bool) -> bytes:
        ws = WebSocketStream(ScriptedStream(cut(wire, wire_cuts)), client=True)
        ws.partial_reads = partial
        out = b""
        while data := await ws.read(n):
            assert len(data) <= n
            out += data
        return out

    assert run_now(read_all(True)) == run_now(read_all(False)) == payload

    # The fast path's cutter, each read in a buffer of its own with room after it (as the
    # relay's): the same payload, the ping seen, the close frame ending it.
    cutter = FrameCutter(max_frame=1 << 20)
    out = b""
    for piece in cut(wire, wire_cuts):
        buf = bytearray(piece) + bytes(16)
        size = cutter.feed(memoryview(buf), len(piece))
        out += bytes(buf[:size])
    assert out == payload and cutter.closed and not cutter.inside
    assert cutter.controls[-1] == (OP_CLOSE, struct.pack("!H", 1000))
    assert all(control == (OP_PING, b"hi") for control in cutter.controls[:-1])


def frames_built_per_packet_read_back(draw: bytes) -> None:
    c = Choices(draw)
    tag = c.pick([Tag.ABRIDGED, Tag.INTERMEDIATE, Tag.PADDED])
    count = 1 + c.byte() % 5
    sizes = [1 + c.byte() % 120 for _ in range(5)][:count]
    writes = numbers(c, 1, 300)
    scale = 4 if tag is Tag.ABRIDGED else 1
    sent = [encode_packet(tag, bytes([i]) * (size * scale)) for i, size in enumerate(sizes)]
    builder = FrameBuilder(PacketSplitter(tag), 0)
    frames: list[bytes] = []
    for piece in cut(b"".join(sent), writes):
        buf = bytearray(piece)  # the relay's buffer, overwritten once the write returns
        builder.feed(memoryview(buf), lambda frame: frames.append(bytes(frame)))
        buf[:] = bytes(len(buf))
    got = []
    for frame in frames:
        used, parsed = parse_frame(frame, expect_masked=True)
        assert used == len(frame) and parsed.fin and parsed.opcode == OP_BINARY
        got.append(bytes(parsed.payload))
    assert got == sent and builder.pending == 0


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    draw=st.binary(min_size=FRAME_HEAD, max_size=FRAME_HEAD + 400),
    draw_1=st.binary(min_size=18, max_size=18),
    draw_2=st.binary(min_size=READ_HEAD + 1, max_size=READ_HEAD + 300),
    draw_3=st.binary(min_size=18, max_size=18),
)
def test_frames_packets_and_partial_reads(draw, draw_1, draw_2, draw_3) -> None:
    a_frame_built_in_a_reused_buffer_reads_back(draw)
    pieces_join_to_the_packets(draw_1)
    partial_reads_yield_the_same_bytes(draw_2)
    frames_built_per_packet_read_back(draw_3)
