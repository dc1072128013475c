"""A UDP echo run for tests and benchmarks: `count` numbered datagrams through any sender,
at most `window` unanswered at once (as a call paces its media), with loss, reordering,
corruption and round trips counted; and an Inbox that collects what a datagram dialer
delivers."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from transports import Endpoint

_HEAD = struct.Struct("!I")


def numbered(seq: int, size: int) -> bytes:
    """Datagram `seq` of `size` bytes (at least 24): its number, then bytes derived from it,
    then a digest of both, so a damaged or cut datagram is told from a whole one."""
    body = _HEAD.pack(seq)
    filler = (hashlib.sha256(body).digest() * (size // 32 + 1))[: size - 4 - 16]
    return body + filler + hashlib.sha256(body + filler).digest()[:16]


def check(data: bytes) -> int | None:
    """The number of an intact datagram from `numbered`, or None."""
    if len(data) < 24 or hashlib.sha256(data[:-16]).digest()[:16] != data[-16:]:
        return None
    return _HEAD.unpack_from(data)[0]


@dataclass
class EchoResult:
    sent: int = 0
    received: int = 0
    corrupt: int = 0
    reordered: int = 0
    duplicates: int = 0
    rtts: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def median_rtt_ms(self) -> float:
        ordered = sorted(self.rtts)
        return ordered[len(ordered) // 2] * 1000 if ordered else float("nan")

    @property
    def per_second(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0


async def echo_run(
    send: Callable[[bytes], None],
    receive: Callable[[], Awaitable[bytes]],
    count: int,
    *,
    sizes: tuple[int, ...] = (100, 1200),
    window: int = 32,
    patience: float = 2.0,
) -> EchoResult:
    """Send `count` datagrams (sizes in turn), `window` at most unanswered; a datagram not
    back within `patience` seconds of the last answer counts as lost."""
    result = EchoResult()
    sent_at: dict[int, float] = {}
    seen: set[int] = set()
    highest = -1
    started = time.perf_counter()
    next_seq = 0
    while next_seq < count or sent_at:
        while next_seq < count and len(sent_at) < window:
            sent_at[next_seq] = time.perf_counter()
            send(numbered(next_seq, sizes[next_seq % len(sizes)]))
            result.sent += 1
            next_seq += 1
        try:
            data = await asyncio.wait_for(receive(), patience)
        except TimeoutError:
            sent_at.clear()  # the rest are lost
            continue
        seq = check(data)
        if seq is None:
            result.corrupt += 1
            continue
        if seq in seen:
            result.duplicates += 1
            continue
        seen.add(seq)
        result.received += 1
        if seq < highest:
            result.reordered += 1
        highest = max(highest, seq)
        at = sent_at.pop(seq, None)
        if at is not None:
            result.rtts.append(time.perf_counter() - at)
    result.seconds = time.perf_counter() - started
    return result


class Inbox:
    """A datagram dialer's receive callback that queues (payload, source) for the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()

    def __call__(self, payload: bytes, source: Endpoint) -> None:
        self.queue.put_nowait((payload, source))

    async def get(self, timeout: float = 5.0) -> tuple[bytes, Endpoint]:
        return await asyncio.wait_for(self.queue.get(), timeout)
