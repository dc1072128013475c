"""An `https://` probe's download (helper/probe/transfer.py): a body that stops while the server
still owes bytes is "stalled" only after the prober's whole stall time without a byte; one
whose time runs out sooner -- still moving, slowly, on a loaded machine or path -- is judged
by its rate, not called a freeze. No sockets: scripted streams."""

from __future__ import annotations

import asyncio
import time

import pytest

from helper.probe.probe import Prober, _Failed
from helper.probe.result import TargetResult
from transports import Failure

HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"


class Slow:
    """A stream that sends `chunks` (bytes, then the seconds before the next), then nothing."""

    def __init__(self, *chunks: tuple[bytes, float]) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        if not self.chunks:
            await asyncio.Event().wait()
        data, pause = self.chunks.pop(0)
        if pause:
            await asyncio.sleep(pause)
        return data


async def test_out_of_time_a_second_after_the_last_byte_is_no_freeze() -> None:
    # The last byte 1.2 s before the probe's time is up: more than the second that used to
    # make a stall, less than the stall time. The transfer was moving: its rate decides.
    prober = Prober(timeout=5.0)
    prober.stall = 5.0
    result = TargetResult("https://x:443/")
    deadline = time.monotonic() + 1.45  # reading ends 0.25 s before
    await prober._download(Slow((b"x" * 16_000, 0.0)), HEAD, 100_000, result, deadline)
    assert result.ok and result.received == 16_000
    assert result.rate_kbps is not None and result.rate_kbps > 0


async def test_a_slow_transfer_below_the_floor_is_throttled_not_stalled() -> None:
    prober = Prober(timeout=5.0, min_rate=1_000_000)
    prober.stall = 5.0
    result = TargetResult("https://x:443/")
    with pytest.raises(_Failed) as failed:
        await prober._download(
            Slow((b"x" * 4000, 0.0), (b"x" * 4000, 0.3)),
            HEAD,
            100_000,
            result,
            time.monotonic() + 1.3,
        )
    assert failed.value.error.failure is Failure.THROTTLED


async def test_no_byte_for_the_stall_time_while_bytes_are_owed_is_a_freeze() -> None:
    prober = Prober(timeout=5.0)
    prober.stall = 0.2
    result = TargetResult("https://x:443/")
    with pytest.raises(_Failed) as failed:
        await prober._download(
            Slow((b"x" * 16_000, 0.0)), HEAD, 100_000, result, time.monotonic() + 30
        )
    assert failed.value.error.failure is Failure.STALLED
    assert "stopped after 16000 bytes" in failed.value.error.detail


async def test_a_whole_body_is_no_freeze_however_slow() -> None:
    prober = Prober(timeout=5.0)
    prober.stall = 0.2
    result = TargetResult("https://x:443/")
    body = Slow((b"x" * 500, 0.0), (b"x" * 500, 0.05))
    await prober._download(body, HEAD, 1000, result, time.monotonic() + 30)
    assert result.ok and result.received == 1000
