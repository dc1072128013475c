"""carrier=auto's watch on long tunnels (transports/fronted/modes.py): how long a PING may go
unanswered before the tunnel counts as frozen follows the relay's measured answer times, so a
slow relay (or a long path) is not taken for a freeze, and a frozen one still is."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from transports.fronted import modes
from transports.fronted.modes import ANSWER_FACTOR, SILENT, CarrierMode


def _mode(handshake_timeout: float = 10.0) -> CarrierMode:
    dialer = SimpleNamespace(
        key=SimpleNamespace(front="cdn.test"), handshake_timeout=handshake_timeout
    )
    return CarrierMode(dialer, "auto")  # type: ignore[arg-type]


async def test_the_deadline_is_silent_until_answers_are_slow() -> None:
    mode = _mode()
    assert mode.answer_deadline() == SILENT
    mode.note_answer(0.05)
    assert mode.answer_deadline() == SILENT  # a fast relay: the floor
    mode.note_answer(1.5)
    assert mode.answer_deadline() == pytest.approx(ANSWER_FACTOR * 1.5)


async def test_the_deadline_never_passes_the_handshake_timeout() -> None:
    mode = _mode(handshake_timeout=7.0)
    mode.note_answer(5.0)
    assert mode.answer_deadline() == 7.0
    short = _mode(handshake_timeout=1.0)  # a timeout under SILENT does not lower the floor
    short.note_answer(5.0)
    assert short.answer_deadline() == SILENT


async def test_only_the_last_answers_count() -> None:
    mode = _mode()
    mode.note_answer(2.0)
    for _ in range(modes.ANSWERS_KEPT):
        mode.note_answer(0.01)
    assert mode.answer_deadline() == SILENT


class _Session:
    """What the watch uses of a MuxSession; its relay answers a PING after `delay` seconds
    (None: never, a frozen flow)."""

    def __init__(self, counted: SimpleNamespace, delay: float | None) -> None:
        self.counted = counted
        self.delay = delay
        self.alive = True
        self.last_heard = asyncio.get_running_loop().time() - 100.0
        self.pings = 0
        self.answered = asyncio.Event()

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        self.pings += 1
        if self.delay is not None:
            asyncio.get_running_loop().call_later(self.delay, self._answer)

    def _answer(self) -> None:
        self.counted.received += 30
        self.last_heard = asyncio.get_running_loop().time()
        self.answered.set()

    def close(self) -> None:
        self.alive = False


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modes, "WATCH_EVERY", 0.01)
    monkeypatch.setattr(modes, "SILENT", 0.1)


async def test_a_slow_relay_is_not_taken_for_a_freeze(quick: None) -> None:
    mode = _mode()
    mode.note_answer(0.5)  # the upgrade took 0.5 s: PINGs get 4 x that
    counted = SimpleNamespace(received=5000)
    session = _Session(counted, delay=0.6)  # slower than SILENT, well within the deadline
    noted = asyncio.Event()
    note = mode.note_answer
    mode.note_answer = lambda seconds: (note(seconds), noted.set())  # type: ignore[method-assign]
    watch = asyncio.ensure_future(mode._watch(session, counted))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            await noted.wait()  # the watch saw the answer
        assert session.alive and mode.frozen_after is None and not mode.froze.is_set()
        assert max(mode._answers) >= 0.6  # the answer's own time is remembered
    finally:
        session.alive = False
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_frozen_tunnel_is_still_found(quick: None) -> None:
    mode = _mode()
    mode.note_answer(0.05)
    counted = SimpleNamespace(received=5000)
    session = _Session(counted, delay=None)
    async with asyncio.timeout(10):
        await mode._watch(session, counted)  # type: ignore[arg-type]
    assert mode.froze.is_set() and mode.frozen_after == 5000
    assert not session.alive and mode.capped_now()


async def test_a_probe_that_stalled_has_the_long_tunnels_asked_at_once(quick: None) -> None:
    mode = _mode()
    counted = SimpleNamespace(received=16 * 1024)
    frozen = _Session(counted, delay=None)
    mode._watched[frozen] = counted  # type: ignore[index]
    wrapper = SimpleNamespace(inner=SimpleNamespace(adapt_to_freeze=mode.confirm_freeze))
    async with asyncio.timeout(10):
        assert await modes.adapt_to_freeze(wrapper)  # found through the dialer it wraps
    assert mode.frozen_after == 16 * 1024 and mode.capped_now() and not frozen.alive
    async with asyncio.timeout(10):
        assert await mode.confirm_freeze()  # a freeze just noted still answers yes


async def test_a_tunnel_that_answers_is_no_reason_to_change(quick: None) -> None:
    mode = _mode()
    counted = SimpleNamespace(received=5000)
    mode._watched[_Session(counted, delay=0.01)] = counted  # type: ignore[index]
    async with asyncio.timeout(10):
        assert not await mode.confirm_freeze()
    assert not mode.froze.is_set()
    long = CarrierMode(mode.dialer, "long")  # never capped: nothing to change
    assert not await long.confirm_freeze()
    assert not await modes.adapt_to_freeze(SimpleNamespace(inner=None))
