"""The `tgws` fast path's pieces without sockets (transports/wsfast.py): the frame cutter
(the endpoint's frames' payload cut out of a buffer in place, however the frames are split
across reads), the frame builder (one masked frame per MTProto packet, however the packets
are split across writes), and the transport wrapper and protocol the relay pipes (control
frames answered, backpressure passed both ways, the ends and the failures)."""

from __future__ import annotations

import asyncio
import logging
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.scripted import ScriptedStream
from transports.mtproto import FramingError, PacketSplitter, Tag, encode_packet
from transports.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocketError,
    WebSocketStream,
    encode_frame,
    parse_frame,
)
from transports.wsfast import FrameBuilder, FrameCutter, TgWsPipe, _TgWsTransport

# --- the frame cutter -------------------------------------------------------------------------


def server_frames(*payloads: bytes) -> bytes:
    return b"".join(encode_frame(OP_BINARY, p, mask=False) for p in payloads)


def cut_all(cutter: FrameCutter, pieces: list[bytes]) -> bytes:
    """Feed each piece through a buffer of its own (larger than the piece, as the relay's
    is), as the TLS transport would deliver it; the payload handed on, joined."""
    out = b""
    for piece in pieces:
        buf = bytearray(piece) + b"\xee" * 32
        size = cutter.feed(memoryview(buf), len(piece))
        out += bytes(buf[:size])
    return out


WIRE = (
    server_frames(b"first message", bytes(range(200)))
    + encode_frame(OP_PING, b"hello", mask=False)
    + encode_frame(OP_BINARY, b"frag-", mask=False, fin=False)
    + encode_frame(OP_CONTINUATION, b"mented" * 30000, mask=False)  # a 64-bit length
    + server_frames(b"last")
)
PAYLOAD = b"first message" + bytes(range(200)) + b"frag-" + b"mented" * 30000 + b"last"


def test_the_payload_is_cut_out_whatever_the_split() -> None:
    for at in [*range(40), len(WIRE) // 2, len(WIRE) - 5, len(WIRE)]:
        cutter = FrameCutter(max_frame=1 << 20)
        assert cut_all(cutter, [WIRE[:at], WIRE[at:]]) == PAYLOAD, at
        assert cutter.controls == [(OP_PING, b"hello")]
        assert not cutter.inside and not cutter.closed


def test_the_payload_is_cut_out_a_byte_at_a_time() -> None:
    cutter = FrameCutter(max_frame=1 << 20)
    wire = server_frames(b"abc", b"", bytes(300)) + encode_frame(OP_PING, b"x", mask=False)
    wire += WIRE[:300]  # a 16-bit length, a ping, a fragmented message's start
    assert cut_all(cutter, [wire[i : i + 1] for i in range(len(wire))]) == (
        b"abc" + bytes(300) + PAYLOAD[:275]
    )
    assert cutter.controls == [(OP_PING, b"x"), (OP_PING, b"hello")]


def test_a_close_frame_ends_the_cutting() -> None:
    cutter = FrameCutter(max_frame=1 << 20)
    close = encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask=False)
    wire = server_frames(b"before") + close + server_frames(b"after")
    assert cut_all(cutter, [wire]) == b"before"
    assert cutter.closed and cutter.controls == [(OP_CLOSE, struct.pack("!H", 1000))]


def test_state_carried_over_from_a_stream() -> None:
    """A cutter that takes over a stream in the middle of a frame (`left`) and of a
    fragmented message (`in_message`)."""
    cutter = FrameCutter(max_frame=1 << 20, left=4, in_message=True)
    wire = b"rest" + encode_frame(OP_CONTINUATION, b"!", mask=False)
    assert cut_all(cutter, [wire[:2], wire[2:]]) == b"rest!"
    assert not cutter.inside


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (encode_frame(OP_TEXT, b"text", mask=False), "text message"),
        (encode_frame(OP_BINARY, b"masked", mask=True), "masked frame"),
        (bytes([0x83, 0]), "unknown opcode"),
        (bytes([0xC2, 0]), "reserved bits"),
        (encode_frame(OP_CONTINUATION, b"x", mask=False, fin=False), "nothing to continue"),
        (encode_frame(OP_BINARY, bytes(2000), mask=False)[:20], "frame of 2000 bytes"),
        (bytes([0x09, 1, 0]), "control frames"),
    ],
    ids=["text", "masked", "opcode", "reserved", "continuation", "oversized", "control"],
)
def test_broken_frames_are_errors(wire: bytes, error: str) -> None:
    for at in (0, 1, len(wire)):
        cutter = FrameCutter(max_frame=1000)
        with pytest.raises(WebSocketError, match=error):
            cut_all(cutter, [wire[:at], wire[at:]])


def test_inside_says_whether_a_frame_was_cut_off() -> None:
    first = server_frames(bytes(300))
    frame = first + encode_frame(OP_PING, b"ping", mask=False)
    for at in set(range(1, len(frame))) - {len(first)}:
        cutter = FrameCutter(max_frame=1 << 20)
        cut_all(cutter, [frame[:at]])
        assert cutter.inside, at
    cutter = FrameCutter(max_frame=1 << 20)
    cut_all(cutter, [frame])
    assert not cutter.inside


# --- the frame builder ------------------------------------------------------------------------


def packets(tag: Tag, sizes: list[int]) -> list[bytes]:
    scale = 4 if tag is Tag.ABRIDGED else 1
    return [encode_packet(tag, bytes([i % 251]) * (s * scale)) for i, s in enumerate(sizes)]


def build(tag: Tag, pieces: list[bytes], *, reveal: Any = None) -> tuple[list[bytes], FrameBuilder]:
    splitter = PacketSplitter(tag) if reveal is None else PacketSplitter(tag, reveal=reveal)
    builder = FrameBuilder(splitter, 0)
    frames: list[bytes] = []
    for piece in pieces:
        view = memoryview(bytearray(piece))  # the relay's buffer: reused after the call
        builder.feed(view, lambda frame: frames.append(bytes(frame)))
        view[:] = b"\xaa" * len(view)
    return frames, builder


def unframe(frames: list[bytes]) -> list[bytes]:
    out = []
    for frame in frames:
        used, parsed = parse_frame(frame, expect_masked=True, max_frame=8 << 20)
        assert used == len(frame) and parsed.fin and parsed.opcode == OP_BINARY
        out.append(bytes(parsed.payload))
    return out


@pytest.mark.parametrize("tag", [Tag.INTERMEDIATE, Tag.ABRIDGED, Tag.PADDED])
def test_one_frame_per_packet_whatever_the_split(tag: Tag) -> None:
    sent = packets(tag, [1, 30, 200, 40000, 3])  # abridged: 127 words and more too
    stream = b"".join(sent)
    for at in [*range(12), len(stream) // 3, len(stream) - 2]:
        for second in (at + 1, at + 3, len(stream) - 1):
            pieces = [stream[:at], stream[at:second], stream[second:]]
            frames, builder = build(tag, pieces)
            assert unframe(frames) == sent, (at, second)
            assert builder.pending == 0 and builder.offset == len(stream)


def test_a_byte_at_a_time() -> None:
    sent = packets(Tag.INTERMEDIATE, [3, 130, 2])
    stream = b"".join(sent)
    frames, _ = build(Tag.INTERMEDIATE, [stream[i : i + 1] for i in range(len(stream))])
    assert unframe(frames) == sent


def test_lengths_are_read_with_the_keystream_at_their_offset() -> None:
    sent = packets(Tag.INTERMEDIATE, [5, 7])
    stream = b"".join(sent)
    pad = bytes(range(1, 50))
    scrambled = bytes(a ^ b for a, b in zip(stream, pad, strict=False))
    seen: list[int] = []

    def reveal(offset: int, raw: bytes) -> bytes:
        seen.append(offset)
        return bytes(a ^ b for a, b in zip(raw, pad[offset:], strict=False))

    frames, _ = build(
        Tag.INTERMEDIATE, [scrambled[:2], scrambled[2:11], scrambled[11:]], reveal=reveal
    )
    assert unframe(frames) == [scrambled[:9], scrambled[9:]]  # passed on as sent
    assert 0 in seen and 9 in seen


def test_the_cut_off_packet_is_handed_out_at_the_end() -> None:
    stream = b"".join(packets(Tag.INTERMEDIATE, [10, 20]))
    for at in (15, 17, 18, 30):
        frames, builder = build(Tag.INTERMEDIATE, [stream[:at]])
        assert unframe(frames) == [stream[:14]]
        assert builder.pending == at - 14
        assert builder.take_pending() == stream[14:at]
        assert builder.pending == 0


def test_a_length_no_packet_has_is_an_error() -> None:
    with pytest.raises(FramingError, match="empty"):
        build(Tag.INTERMEDIATE, [b"\0\0", b"\0\0"])
    with pytest.raises(FramingError, match="at most"):
        build(Tag.INTERMEDIATE, [struct.pack("<I", 3 << 20)])


def test_a_frame_still_held_below_is_not_overwritten() -> None:
    """A write that keeps a view of the frame (it could not take it in) makes the next
    frame of another size go into a buffer of its own."""
    splitter = PacketSplitter(Tag.INTERMEDIATE)
    builder = FrameBuilder(splitter, 0)
    held: list[memoryview] = []
    builder.feed(encode_packet(Tag.INTERMEDIATE, b"a" * 100), lambda f: held.append(memoryview(f)))
    first = bytes(held[0])
    out: list[bytes] = []
    builder.feed(encode_packet(Tag.INTERMEDIATE, b"b" * 300), lambda f: out.append(bytes(f)))
    assert bytes(held[0]) == first
    assert unframe(out) == [encode_packet(Tag.INTERMEDIATE, b"b" * 300)]


# --- the transport and protocol the relay pipes ----------------------------------------------


class FakeTransport:
    """A TLS transport as the wrapper uses it: records what is written and called."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol: Any = None
        self.closed = False
        self.calls: list[str] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def frames(self) -> list[tuple[int, bytes]]:
        out = []
        for data in self.written:
            used, frame = parse_frame(data, expect_masked=True, max_frame=8 << 20)
            assert used == len(data)
            out.append((frame.opcode, bytes(frame.payload)))
        return out


class FakeRelay(asyncio.BufferedProtocol):
    """The relay's leg: a buffer, and a record of what it was told."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(1024))
        self.received = b""
        self.events: list[Any] = []

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += bytes(self.buffer[:nbytes])

    def eof_received(self) -> bool:
        self.events.append("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")


def piped(cutter: FrameCutter | None = None) -> tuple[_TgWsTransport, FakeTransport, FakeRelay]:
    transport = FakeTransport()
    stream = SimpleNamespace(
        endpoint=SimpleNamespace(host="kws2.web.telegram.org"),
        _splitter=PacketSplitter(Tag.INTERMEDIATE),
    )
    wrapper = _TgWsTransport(
        transport,  # type: ignore[arg-type]
        stream,
        cutter or FrameCutter(max_frame=1 << 20),
        closing=False,
    )
    relay = FakeRelay()
    wrapper.set_protocol(relay)
    return wrapper, transport, relay


def deliver(transport: FakeTransport, data: bytes) -> None:
    """What the TLS transport does with decrypted bytes: into the protocol's buffer."""
    protocol = transport.protocol
    buf = protocol.get_buffer(len(data))
    buf[: len(data)] = data
    protocol.buffer_updated(len(data))


def test_payload_reaches_the_relay_and_pings_are_answered() -> None:
    wrapper, transport, relay = piped()
    wire = server_frames(b"one") + encode_frame(OP_PING, b"p", mask=False) + server_frames(b"two")
    deliver(transport, wire[:5])
    deliver(transport, wire[5:])
    assert relay.received == b"onetwo"
    assert transport.protocol._view is None  # no relay buffer kept between reads
    assert transport.frames() == [(OP_PONG, b"p")]
    assert wrapper.get_protocol() is relay


def test_backpressure_passes_both_ways() -> None:
    wrapper, transport, relay = piped()
    transport.protocol.pause_writing()  # the TLS transport's buffer is full: the relay
    transport.protocol.resume_writing()  # stops reading the client, then goes on
    assert relay.events == ["pause_writing", "resume_writing"]
    wrapper.pause_reading()  # the client's socket is full: the TLS transport stops
    wrapper.resume_reading()
    assert transport.calls == ["pause_reading", "resume_reading"]
    assert wrapper.get_write_buffer_size() == 0  # every write is copied before it returns


def test_the_clients_writes_become_one_frame_per_packet() -> None:
    wrapper, transport, _ = piped()
    data = encode_packet(Tag.INTERMEDIATE, b"x" * 50) + encode_packet(Tag.INTERMEDIATE, b"y" * 9)
    wrapper.write(memoryview(data)[:30])
    assert transport.written == []
    wrapper.write(memoryview(data)[30:])
    assert transport.frames() == [(OP_BINARY, data[:54]), (OP_BINARY, data[54:])]


def test_the_clients_half_close_is_a_close_frame_after_its_cut_off_packet() -> None:
    wrapper, transport, relay = piped()
    assert wrapper.can_write_eof()
    wrapper.write(encode_packet(Tag.INTERMEDIATE, b"z" * 40)[:10])
    wrapper.write_eof()
    frames = transport.frames()
    assert frames[0][0] == OP_BINARY and len(frames[0][1]) == 10
    assert frames[1] == (OP_CLOSE, struct.pack("!H", 1000))
    # The endpoint's last bytes and its close frame: the relay gets both, then the end.
    deliver(transport, server_frames(b"last") + encode_frame(OP_CLOSE, b"\x03\xe8", mask=False))
    assert relay.received == b"last" and relay.events == ["eof"]
    assert len(transport.frames()) == 2  # ours was out first: no second close frame


def test_the_endpoints_close_is_answered_and_ends_the_download() -> None:
    wrapper, transport, relay = piped()
    deliver(transport, encode_frame(OP_CLOSE, b"\x03\xe8bye", mask=False))
    assert transport.frames() == [(OP_CLOSE, b"\x03\xe8")]
    assert relay.events == ["eof"]
    wrapper.write(encode_packet(Tag.INTERMEDIATE, b"late"))  # nothing may follow: a reset
    assert transport.closed and len(transport.written) == 1
    transport.protocol.connection_lost(None)
    assert isinstance(relay.events[-1][1], ConnectionResetError)


def test_an_end_inside_a_frame_is_a_reset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="detour.transports.tgws")
    _, transport, relay = piped()
    deliver(transport, server_frames(b"0123456789")[:6])
    assert transport.protocol.eof_received() is None  # never True: the TLS transport warns
    assert transport.closed and "eof" not in relay.events
    transport.protocol.connection_lost(None)
    assert "inside a WebSocket frame" in str(relay.events[-1][1])
    assert "tgws to kws2.web.telegram.org" in caplog.text


def test_a_clean_end_without_a_close_frame_is_an_end() -> None:
    _, transport, relay = piped()
    deliver(transport, server_frames(b"done"))
    transport.protocol.eof_received()
    transport.protocol.connection_lost(None)
    assert relay.received == b"done" and relay.events == ["eof", ("lost", None)]


def test_a_protocol_error_or_a_bad_packet_is_a_reset() -> None:
    _, transport, relay = piped()
    deliver(transport, encode_frame(OP_TEXT, b"hi", mask=False))
    assert transport.closed
    assert transport.frames() == [(OP_CLOSE, struct.pack("!H", 1002))]
    transport.protocol.connection_lost(None)
    assert "text message" in str(relay.events[-1][1])

    wrapper, transport, relay = piped()
    wrapper.write(b"\0\0\0\0")  # an empty packet
    assert transport.closed
    transport.protocol.connection_lost(None)
    assert "empty packet" in str(relay.events[-1][1])


def test_close_sends_a_close_frame_once() -> None:
    wrapper, transport, _ = piped()
    wrapper.close()
    wrapper.close()
    assert transport.frames() == [(OP_CLOSE, struct.pack("!H", 1000))] and transport.closed


# --- taking a stream over ---------------------------------------------------------------------


class DetachableInner(ScriptedStream):
    """A socket stream the pipe takes over: what it held unread, and its protocol's state."""

    def __init__(self, unread: bytes, **state: Any) -> None:
        super().__init__()
        self.unread_bytes = unread
        self.transport = FakeTransport()
        self.state = SimpleNamespace(
            eof=False, lost=False, exc=None, writing_paused=False, reading_paused=False
        )
        vars(self.state).update(state)

    def detach(self) -> tuple[Any, bytes, Any]:
        return self.transport, self.unread_bytes, self.state


def a_stream(inner: DetachableInner, held: bytes = b"") -> Any:
    ws = WebSocketStream(inner, client=True)
    ws.partial_reads = True
    splitter = PacketSplitter(Tag.INTERMEDIATE)
    splitter.feed_parts(held)
    return SimpleNamespace(ws=ws, endpoint=SimpleNamespace(host="kws2"), _splitter=splitter)


def test_the_pipe_takes_over_what_the_stream_held() -> None:
    frame = server_frames(b"0123456789")
    wire = (
        frame[6:]  # the rest of a frame the stream began handing out
        + encode_frame(OP_PING, b"?", mask=False)
        + server_frames(b"more")
        + frame[:1]  # a head that continues later
    )
    inner = DetachableInner(wire, writing_paused=True)
    packet = encode_packet(Tag.INTERMEDIATE, b"u" * 20)
    stream = a_stream(inner, held=packet[:7])
    ws = stream.ws
    ws._ready.append(b"ready")
    ws._left = 6
    wrapper, pending, state = TgWsPipe(stream).detach()
    assert pending == b"ready" + b"456789" + b"more"
    assert state.writing_paused and not state.eof and not state.lost
    assert inner.transport.frames() == [(OP_PONG, b"?")]
    wrapper.write(packet[7:])  # the packet the stream held the start of, completed
    assert inner.transport.frames()[-1] == (OP_BINARY, packet)
    relay = FakeRelay()
    wrapper.set_protocol(relay)
    deliver(inner.transport, frame[1:])
    assert relay.received == b"0123456789"


def test_the_pipe_takes_over_an_ended_stream() -> None:
    close = encode_frame(OP_CLOSE, b"\x03\xe8", mask=False)
    inner = DetachableInner(server_frames(b"tail") + close)
    wrapper, pending, state = TgWsPipe(a_stream(inner)).detach()
    assert pending == b"tail" and state.eof
    assert inner.transport.frames() == [(OP_CLOSE, b"\x03\xe8")] and wrapper.closing

    inner = DetachableInner(server_frames(b"cut")[:4], eof=True)
    wrapper, pending, state = TgWsPipe(a_stream(inner)).detach()
    assert pending == b"cu" and wrapper.error is not None and inner.transport.closed
