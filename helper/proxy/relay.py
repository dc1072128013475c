"""The relay pump: move bytes both ways between a client and the route's stream until both
directions have ended, with half-close, byte counters, an idle timeout and bounded memory.

Fast path: when both streams offer a transport to take over (`Stream.raw_socket_stream()`:
plain TCP underneath, or a `tgws` stream's TLS transport wrapped by transports/wsfast.py,
which frames in place), their transports are handed to a pair of asyncio Protocols that
write what one receives straight into the other, pausing the reader while the writer's
buffer is full. No task, no await, no Python-level buffering per
chunk; on loopback this is 3-4x faster than a read/write loop over streams.

Generic path: any other Stream (TLS in Python, a wrapper that rewrites bytes) is pumped by
two copy tasks with read/write/drain. A wrapper that only rewrites the first bytes (tlsfrag,
split) becomes a plain socket underneath once they are out; the relay then switches to the
fast path mid-stream.

Ends of stream: a FIN on one side becomes a FIN (write_eof) on the other, and the other
direction keeps flowing. A reset on one side becomes a reset on the other, so a truncated
transfer is never passed off as a complete one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from transports import Stream
from transports.tcp import SocketStream, StreamProtocol, reset_transport

__all__ = ["Progress", "RelayStats", "relay"]

CHUNK = 256 * 1024
# Per-direction write buffer limit on the fast path: past it the other side stops reading.
WRITE_HIGH_WATER = 512 * 1024


@dataclass(slots=True)
class RelayStats:
    """Bytes moved so far; updated live so status views can read them mid-transfer."""

    up: int = 0  # client -> destination
    down: int = 0  # destination -> client
    idle_timed_out: bool = False
    reset: bool = False  # a side was reset (or failed): the transfer did not end cleanly
    fast_path: bool = False  # (ended) transport-to-transport (raw_socket_stream on both sides)


class Progress(Protocol):
    """What watches a connection's progress (helper/routing/progress.py): told of every
    chunk, with the event loop's time."""

    def sent(self, size: int, now: float) -> None:
        """`size` bytes went from the client toward the destination."""

    def received(self, data: bytes | memoryview, now: float) -> None:
        """`data` came from the destination (only valid during the call)."""


async def relay(
    client: Stream,
    upstream: Stream,
    *,
    idle_timeout: float | None = None,
    stats: RelayStats | None = None,
    progress: Progress | None = None,
) -> RelayStats:
    """Relay until both directions end, a side fails, or nothing moves for `idle_timeout`.
    `progress` is told of every chunk."""
    stats = stats if stats is not None else RelayStats()
    fast_client = client.raw_socket_stream()
    fast_upstream = upstream.raw_socket_stream()
    if fast_client is None or fast_upstream is None:
        if not await _copy_both(client, upstream, stats, idle_timeout, progress):
            return stats
        fast_client = client.raw_socket_stream()
        fast_upstream = upstream.raw_socket_stream()
        assert fast_client is not None
        assert fast_upstream is not None
    stats.fast_path = True
    await _TransportPipe(fast_client, fast_upstream, stats, idle_timeout, progress).run()
    return stats


# --- fast path ----------------------------------------------------------------------------


class _Scratch(threading.local):
    """The buffer fast-path reads land in, shared by every leg on this thread's event loop.

    A read is forwarded before the next one starts, so one buffer serves all connections
    and an idle connection holds none. When the receiving transport cannot send a chunk at
    once it may keep a reference to it (a memoryview: Python 3.12+ and uvloop do), so that
    buffer is handed over and the next read gets a fresh one.
    """

    def __init__(self) -> None:
        self.view = memoryview(bytearray(CHUNK))

    def retire(self) -> None:
        self.view = memoryview(bytearray(CHUNK))


_scratch = _Scratch()


class _Leg(asyncio.BufferedProtocol):
    """One side of the pipe: receives from its own transport, writes into its peer's."""

    def __init__(self, pipe: _TransportPipe, transport: asyncio.Transport, upward: bool) -> None:
        self.pipe = pipe
        self.transport = transport
        self.upward = upward  # True for the client side: what it receives goes up
        self.peer: _Leg
        self.eof = False
        self.lost = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return _scratch.view

    def buffer_updated(self, nbytes: int) -> None:
        if self.forward(_scratch.view[:nbytes]):
            _scratch.retire()

    def forward(self, data: bytes | memoryview) -> bool:
        """Write `data` to the peer; True if some of it is still queued there."""
        pipe = self.pipe
        if self.upward:
            pipe.stats.up += len(data)
        else:
            pipe.stats.down += len(data)
        if pipe.progress is not None:
            if self.upward:
                pipe.progress.sent(len(data), pipe.loop.time())
            else:
                pipe.progress.received(data, pipe.loop.time())
        pipe.active = True
        peer = self.peer
        if peer.lost:
            return False
        peer.transport.write(data)
        return peer.transport.get_write_buffer_size() > 0

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if not peer.lost and peer.transport.can_write_eof():
            peer.transport.write_eof()
        self.pipe.check_finished()
        return True  # keep our transport: the other direction may still be flowing

    def pause_writing(self) -> None:
        # Our transport's outgoing buffer is full: stop reading what feeds it.
        if not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.lost and not self.peer.eof:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pipe.leg_lost(self, exc)


class _TransportPipe:
    def __init__(
        self,
        client: SocketStream,
        upstream: SocketStream,
        stats: RelayStats,
        idle_timeout: float | None,
        progress: Progress | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.stats = stats
        self.progress = progress
        self.idle_timeout = idle_timeout
        self.active = False
        self.closing = False  # we chose to close (both ends done, or idle): no resets
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._streams = (client, upstream)
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        client, upstream = self._streams
        ct, c_pending, c_state = client.detach()
        ut, u_pending, u_state = upstream.detach()
        a = _Leg(self, ct, upward=True)
        b = _Leg(self, ut, upward=False)
        a.peer, b.peer = b, a
        self.legs = (a, b)
        for transport in (ct, ut):
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        ct.set_protocol(a)
        ut.set_protocol(b)
        # Carry over what the streams' protocols saw before the hand-over.
        for leg, pending, state in ((a, c_pending, c_state), (b, u_pending, u_state)):
            self._adopt(leg, pending, state)
        if self.idle_timeout:
            self._timer = self.loop.call_later(self.idle_timeout, self._idle_check)
        try:
            await self.done  # (cancelling the task cancels it: nothing else waits on it)
        except asyncio.CancelledError:
            for leg in self.legs:
                if not leg.lost:
                    reset_transport(leg.transport)
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _adopt(self, leg: _Leg, pending: bytes, state: StreamProtocol) -> None:
        if state.lost:
            leg.connection_lost(state.exc)
            return
        if pending:
            leg.forward(pending)
        if state.writing_paused:
            leg.pause_writing()
        if state.reading_paused:
            leg.transport.resume_reading()
        if state.eof:
            leg.eof_received()

    def check_finished(self) -> None:
        a, b = self.legs
        if a.eof and b.eof:
            # Both directions ended cleanly: close once the buffers are flushed.
            self.closing = True
            a.transport.close()
            b.transport.close()

    def leg_lost(self, leg: _Leg, exc: Exception | None) -> None:
        peer = leg.peer
        if not peer.lost:
            if exc is not None or not (leg.eof or self.closing):
                # Reset, or gone without a clean end: tell the other side the same way.
                self.stats.reset = True
                reset_transport(peer.transport)
            else:
                peer.transport.close()
        if all(leg.lost for leg in self.legs) and not self.done.done():
            self.done.set_result(None)

    def _idle_check(self) -> None:
        if self.active:
            self.active = False
            assert self.idle_timeout is not None
            self._timer = self.loop.call_later(self.idle_timeout, self._idle_check)
            return
        self.stats.idle_timed_out = True
        self.closing = True
        for leg in self.legs:
            if not leg.lost:
                leg.transport.close()


# --- generic path -------------------------------------------------------------------------


async def _copy(
    src: Stream,
    dst: Stream,
    stats: RelayStats,
    upward: bool,
    clock: list[float],
    on_chunk: Callable[[], None],
    progress: Progress | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await src.read(CHUNK)
        if not data:
            break
        if upward:
            stats.up += len(data)
        else:
            stats.down += len(data)
        clock[0] = loop.time()
        if progress is not None:
            if upward:
                progress.sent(len(data), clock[0])
            else:
                progress.received(data, clock[0])
        dst.write(data)
        await dst.drain()
        on_chunk()
    # Pass the end of stream on. A stream that cannot half-close (TLS 1.2) just stops
    # receiving; the other direction keeps flowing until it ends too.
    if dst.can_write_eof():
        dst.write_eof()


async def _copy_both(
    client: Stream,
    upstream: Stream,
    stats: RelayStats,
    idle_timeout: float | None,
    progress: Progress | None = None,
) -> bool:
    """Copy both ways until both end, a side fails or the idle timeout passes (then close
    both streams and return False), or until both streams have become plain sockets
    underneath while both directions still flow (then return True, streams left open, for
    the caller to continue on the fast path). A wrapper that rewrites only the first bytes
    (tlsfrag, split) becomes such a stream once they are out."""
    loop = asyncio.get_running_loop()
    clock = [loop.time()]  # time of the last chunk, either way
    upgrade = loop.create_future()

    def check_upgrade() -> None:
        if (
            not upgrade.done()
            and client.raw_socket_stream() is not None
            and upstream.raw_socket_stream() is not None
        ):
            upgrade.set_result(None)

    copies = {
        asyncio.ensure_future(_copy(client, upstream, stats, True, clock, check_upgrade, progress)),
        asyncio.ensure_future(
            _copy(upstream, client, stats, False, clock, check_upgrade, progress)
        ),
    }
    failed = upgraded = False
    try:
        pending: set[asyncio.Future[None]] = set(copies)
        while pending and not failed:
            timeout = None
            if idle_timeout:
                timeout = max(0.0, clock[0] + idle_timeout - loop.time())
            waiting = pending | ({upgrade} if not upgrade.done() else set())
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            pending -= done
            if upgrade in done and len(pending) == 2:
                upgraded = True
                break
            if not done and idle_timeout and loop.time() - clock[0] >= idle_timeout:
                stats.idle_timed_out = True
                break
            failed = any(
                not t.cancelled() and t.exception() is not None for t in done if t is not upgrade
            )
    except asyncio.CancelledError:
        failed = True  # cut short (detour is stopping): reset both sides, never a clean end
        raise
    finally:
        for task in copies:
            task.cancel()
        # Reap both tasks; what went wrong is already recorded in `failed`. A copy cancelled
        # while waiting to read has taken nothing; one cancelled in drain has written its
        # chunk: no byte is lost by switching paths.
        await asyncio.gather(*copies, return_exceptions=True)
        if not upgrade.done():
            upgrade.cancel()
        if failed:
            stats.reset = True
            client.abort()
            upstream.abort()
        elif not upgraded:
            client.close()
            upstream.close()
    return upgraded
