"""The relay pump on real loopback sockets, on both of its paths: transport-to-transport
(both sides plain TCP) and the generic stream copy (any other Stream)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from helper.proxy.relay import RelayStats, relay
from transports import Stream
from transports.tcp import SocketStream, connect_tcp
from transports.wrapped import WrappedStream


class PassThrough(WrappedStream):
    """A wrapper that changes nothing but never reports its socket: forces the generic path."""

    def raw_socket_stream(self) -> None:
        return None


class FirstWriteMarker(PassThrough):
    """Like tlsfrag: rewrites the first write (here: prefixes a marker), then steps aside,
    reporting the socket underneath so the relay can move to its fast path."""

    def __init__(self, inner: SocketStream) -> None:
        super().__init__(inner)
        self.first_done = False

    def write(self, data: bytes) -> None:
        if not self.first_done:
            self.first_done = True
            data = b"[first]" + data
        self.inner.write(data)

    def raw_socket_stream(self) -> SocketStream | None:
        return self.inner.raw_socket_stream() if self.first_done else None


Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def stream_pair() -> tuple[SocketStream, Pair]:
    """A SocketStream for the relay, and the plain asyncio streams at its other end."""
    accepted: asyncio.Future[Pair] = asyncio.get_running_loop().create_future()

    async def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result((r, w))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await connect_tcp("127.0.0.1", port)
    peer = await accepted
    server.close()
    return stream, peer


@pytest.fixture(params=["fast", "generic"])
def path(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def relayed(
    path: str,
) -> AsyncIterator[Callable[..., Awaitable[tuple[Pair, Pair, asyncio.Task[RelayStats]]]]]:
    """Start a relay between two socket pairs; return (client end, server end, relay task)."""
    tasks: list[asyncio.Task[RelayStats]] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(
        idle_timeout: float | None = None, ours: list[SocketStream] | None = None
    ) -> tuple[Pair, Pair, asyncio.Task[RelayStats]]:
        """`ours`: given a list, the relay's own two sockets are put in it."""
        a, client = await stream_pair()
        b, server = await stream_pair()
        if ours is not None:
            ours.extend([a, b])
        left: Stream = a if path == "fast" else PassThrough(a)
        right: Stream = b if path == "fast" else PassThrough(b)
        task = asyncio.ensure_future(relay(left, right, idle_timeout=idle_timeout))
        tasks.append(task)
        writers.extend([client[1], server[1]])
        return client, server, task

    yield start
    for writer in writers:
        writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_takes_the_fast_path_only_for_plain_sockets(relayed, path) -> None:
    (cr, cw), (sr, sw), task = await relayed()
    cw.write(b"x")
    assert await sr.readexactly(1) == b"x"
    cw.close()
    sw.close()
    stats = await asyncio.wait_for(task, 5)
    assert stats.fast_path == (path == "fast")


async def test_counts_bytes_and_carries_half_close(relayed) -> None:
    (cr, cw), (sr, sw), task = await relayed()
    cw.write(b"a" * 100_000)
    cw.write_eof()  # client done sending ...
    assert await sr.read() == b"a" * 100_000  # ... the server sees the end of stream ...
    sw.write(b"b" * 300_000)  # ... and can still answer in full
    sw.write_eof()
    assert await cr.read() == b"b" * 300_000
    stats = await asyncio.wait_for(task, 5)
    assert (stats.up, stats.down) == (100_000, 300_000)
    assert not stats.reset and not stats.idle_timed_out


async def test_a_half_close_behind_a_held_up_upload_comes_after_all_of_it(relayed) -> None:
    """The client sends far more than the buffers on the way hold and ends its side at once,
    while the server reads nothing: the relay is held up (its write buffer toward the server
    full, the client's reads paused) with the end of stream queued behind the bytes. Once
    the server reads, slowly, every byte comes before the end of stream, and the answer after
    it still reaches the client."""
    ours: list[SocketStream] = []
    (cr, cw), (sr, sw), task = await relayed(ours=ours)
    toward_server = ours[1].transport
    payload = bytes(range(256)) * (128 << 10)  # 32 MiB: more than every buffer on the way
    cw.write(payload)
    cw.write_eof()
    for _ in range(1000):  # until the relay holds bytes it cannot send yet
        if toward_server.get_write_buffer_size() > 0:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the relay was never held up")
    got = bytearray()
    while data := await sr.read(16 << 10):
        got += data
    assert len(got) == len(payload) and got == payload
    sw.write(b"all there")
    sw.write_eof()
    assert await cr.read() == b"all there"
    stats = await asyncio.wait_for(task, 10)
    assert (stats.up, stats.down) == (len(payload), 9)
    assert not stats.reset


async def test_reset_on_one_side_becomes_reset_on_the_other(relayed) -> None:
    (cr, cw), (sr, sw), task = await relayed()
    sw.write(b"partial answer")
    await sw.drain()
    assert await cr.readexactly(14) == b"partial answer"
    sock = sw.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sw.transport.abort()  # the server side dies with a RST
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(1):  # the client learns within a second
            while await cr.read(65536):
                pass
    stats = await asyncio.wait_for(task, 5)
    assert stats.reset


async def test_cancelling_the_relay_resets_both_sides(relayed) -> None:
    """detour stopping cuts a relay by cancelling it: both ends must see a reset, never a
    clean end of stream that would pass a truncated transfer off as complete."""
    (cr, cw), (sr, sw), task = await relayed()
    cw.write(b"up")
    assert await sr.readexactly(2) == b"up"
    task.cancel()
    for reader in (cr, sr):
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                while await reader.read(65536):
                    pass


async def test_peer_closing_without_reading_ends_both(relayed) -> None:
    (cr, cw), (sr, sw), task = await relayed()
    cw.close()  # client vanishes entirely (FIN, then nothing)
    assert await asyncio.wait_for(sr.read(), 5) == b""
    sw.close()
    await asyncio.wait_for(task, 5)


async def test_idle_timeout_closes_both_sides(relayed) -> None:
    (cr, cw), (sr, sw), task = await relayed(idle_timeout=0.3)
    cw.write(b"hi")
    assert await sr.readexactly(2) == b"hi"
    stats = await asyncio.wait_for(task, 5)
    assert stats.idle_timed_out
    assert await asyncio.wait_for(cr.read(), 1) == b""


async def test_activity_keeps_an_idle_timeout_away(relayed) -> None:
    (cr, cw), (sr, sw), task = await relayed(idle_timeout=0.4)
    for _ in range(8):  # 8 x 0.1 s of traffic: twice the idle timeout in total
        cw.write(b".")
        assert await sr.readexactly(1) == b"."
        await asyncio.sleep(0.1)
    assert not task.done()


async def test_memory_stays_bounded_when_the_client_never_reads(relayed) -> None:
    """The server pushes as fast as it can while the client reads nothing: detour must stop
    reading from the server (flow control) rather than buffer without bound."""
    (cr, cw), (sr, sw), task = await relayed()
    chunk = b"z" * (1 << 20)
    sent = 0

    async def push() -> None:
        nonlocal sent
        while True:
            sw.write(chunk)
            await sw.drain()
            sent += len(chunk)

    pusher = asyncio.ensure_future(push())
    await asyncio.sleep(1.0)
    stalled_at = sent
    await asyncio.sleep(0.5)
    pusher.cancel()
    await asyncio.gather(pusher, return_exceptions=True)
    # Kernel socket buffers on loopback take several MiB on each hop; detour itself holds at
    # most its write-buffer limit plus one read. Without flow control this would be GiBs.
    assert sent - stalled_at <= 2 * (1 << 20), "the sender was never paused"
    assert sent < 64 * (1 << 20), f"{sent >> 20} MiB accepted without the client reading"


async def test_switches_to_the_fast_path_once_a_wrapper_steps_aside() -> None:
    a, (cr, cw) = await stream_pair()
    b, (sr, sw) = await stream_pair()
    task = asyncio.ensure_future(relay(a, FirstWriteMarker(b)))
    cw.write(b"hello")
    assert await sr.readexactly(12) == b"[first]hello"
    # After the switch, both directions keep flowing, byte for byte, and half-close holds.
    payload = bytes(range(256)) * 4096  # 1 MiB
    cw.write(payload)
    cw.write_eof()
    assert await sr.readexactly(len(payload)) == payload
    assert await sr.read() == b""
    sw.write(payload)
    sw.write_eof()
    assert await cr.readexactly(len(payload)) == payload
    assert await cr.read() == b""
    stats = await asyncio.wait_for(task, 5)
    assert stats.fast_path
    assert (stats.up, stats.down) == (5 + len(payload), len(payload))
    cw.close()
    sw.close()


async def test_stays_on_the_generic_path_if_a_direction_already_ended() -> None:
    a, (cr, cw) = await stream_pair()
    b, (sr, sw) = await stream_pair()
    task = asyncio.ensure_future(relay(a, FirstWriteMarker(b)))
    sw.write_eof()  # the server is done before the client's first byte
    assert await cr.read() == b""
    cw.write(b"late")
    cw.write_eof()
    assert await sr.read() == b"[first]late"
    stats = await asyncio.wait_for(task, 5)
    assert not stats.fast_path
    cw.close()
    sw.close()


def _pattern(seed: int, size: int) -> bytes:
    """Deterministic bytes that differ at every offset and between connections."""
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


async def _slow_readers_get_every_byte() -> None:
    """Downloads to clients that read in small, irregular bites: the relay's writes to them
    come up short over and over, so read buffers are lent out and (once let go) reused."""
    size = 3 << 20
    pairs = []
    tasks = []
    for seed in range(3):
        a, client = await stream_pair()
        b, server = await stream_pair()
        pairs.append((client, server, _pattern(seed, size)))
        # Small socket buffers toward the client: the relay's writes there come up short.
        a.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        client[1].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        tasks.append(asyncio.ensure_future(relay(a, b)))

    async def download(client: Pair, server: Pair, data: bytes) -> bytes:
        server[1].write(data)
        server[1].write_eof()
        got = bytearray()
        bite = 1
        while chunk := await client[0].read(4096 + bite * 997 % 60000):
            got += chunk
            bite += 1
            if bite % 16 == 0:
                await asyncio.sleep(0)  # let the other downloads fill their buffers
        client[1].close()
        server[1].close()
        return bytes(got)

    got = await asyncio.wait_for(asyncio.gather(*(download(*p) for p in pairs)), 60)
    for (_, _, data), received in zip(pairs, got, strict=True):
        assert len(received) == len(data)
        assert received == data
    stats = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(s.fast_path and s.down == size for s in stats)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_reused_read_buffers_never_corrupt_a_download(loop: str) -> None:
    factory = None
    if loop == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_slow_readers_get_every_byte())
