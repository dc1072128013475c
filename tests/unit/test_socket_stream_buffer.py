"""SocketStream's read buffer without a socket: what the transport delivered comes back in
order and whole, however reads, unreads and deliveries interleave; a delivery read whole is
returned as it came (no copy)."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from transports.tcp import READ_HIGH_WATER, WHOLE_DELIVERY, SocketStream, StreamProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def stream() -> tuple[SocketStream, StreamProtocol, FakeTransport]:
    protocol = StreamProtocol()
    transport = FakeTransport()
    protocol.transport = transport  # type: ignore[assignment]
    return SocketStream(transport, protocol), protocol, transport  # type: ignore[arg-type]


def read_now(s: SocketStream, n: int) -> bytes:
    """A read that must not wait (something is buffered)."""
    coro = s.read(n)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the read waited with bytes buffered")


def test_a_delivery_read_whole_is_returned_as_it_came() -> None:
    s, protocol, _ = stream()
    data = bytes(range(256)) * 1024
    protocol.data_received(data)
    assert read_now(s, 1 << 20) is data


def test_partial_reads_unread_and_detach_keep_the_order() -> None:
    s, protocol, _ = stream()
    protocol.data_received(b"abcdef")
    assert read_now(s, 2) == b"ab"
    protocol.data_received(b"gh")
    s.unread(b"XY")
    assert read_now(s, 3) == b"XYc"
    protocol.data_received(b"ij")
    _, rest, _ = s.detach()  # type: ignore[misc]
    assert rest == b"defghij"


def test_a_large_delivery_is_read_alone_and_detach_takes_everything() -> None:
    s, protocol, _ = stream()
    first, second = b"a" * WHOLE_DELIVERY, b"b" * WHOLE_DELIVERY
    protocol.data_received(first)
    protocol.data_received(second)
    assert read_now(s, 1 << 20) is first  # not joined with what follows: no copy
    protocol.data_received(b"c")
    protocol.data_received(b"d")
    _, rest, _ = s.detach()  # type: ignore[misc]
    assert rest == second + b"cd"


def test_small_deliveries_are_joined_up_to_the_read_size() -> None:
    s, protocol, _ = stream()
    for part in (b"ab", b"cd", b"ef"):
        protocol.data_received(part)
    assert read_now(s, 5) == b"abcde"
    assert read_now(s, 5) == b"f"


def test_reading_pauses_and_resumes_on_what_is_unread() -> None:
    s, protocol, transport = stream()
    protocol.data_received(b"x" * (READ_HIGH_WATER + 1))
    assert transport.paused
    read_now(s, READ_HIGH_WATER)
    assert not transport.paused


def test_end_of_stream_after_the_last_bytes() -> None:
    s, protocol, _ = stream()
    protocol.data_received(b"last")
    protocol.eof_received()
    assert read_now(s, 100) == b"last"
    assert asyncio.run(s.read(100)) == b""


@given(st.binary(max_size=24))
def test_bytes_come_back_in_order_whatever_interleaves(script: bytes) -> None:
    """Each byte of `script` is a step: its low two bits say which (data delivered, a read,
    an unread), the rest how many bytes."""
    s, protocol, _ = stream()
    expected = bytearray()  # what a reader must see next, in order
    for step in script:
        kind, size = step & 3, (step >> 2) % 9 + 1
        if kind <= 1:
            data = bytes([step]) * size
            protocol.data_received(data)
            expected += data
        elif kind == 2 and expected:
            got = read_now(s, size)
            assert got == bytes(expected[: len(got)]) and 0 < len(got) <= size
            del expected[: len(got)]
        elif kind == 3:
            back = bytes([size]) * size
            s.unread(back)
            expected[:0] = back
    rest = b""
    while len(rest) < len(expected):
        rest += read_now(s, 1000)
    assert rest == bytes(expected)
