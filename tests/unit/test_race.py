"""Staggered racing (transports/race.py). Attempts are scripted coroutines that log what
happens to them; tests assert the order of events, never how long something took (the only
time bounds are generous safety nets against hangs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from transports.race import RaceFailed, staggered_race

DELAY = 0.05  # stagger used by most tests
NEVER = 30.0  # a delay so long that reaching it means the race waited when it should not have
SAFETY = 5.0  # generous bound: only there so a broken race fails instead of hanging


class Script:
    """Attempts that record start / finish / cancel events in one shared log."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release = asyncio.Event()  # never set unless a test sets it
        self._started: dict[int, asyncio.Event] = {}

    def started(self, i: int) -> asyncio.Event:
        return self._started.setdefault(i, asyncio.Event())

    def succeed(self, i: int, value: object = None) -> Callable[[], Awaitable[object]]:
        async def attempt() -> object:
            self.log.append(f"start {i}")
            self.log.append(f"win {i}")
            return value if value is not None else f"result {i}"

        return attempt

    def fail(self, i: int, exc: BaseException | None = None) -> Callable[[], Awaitable[object]]:
        async def attempt() -> object:
            self.log.append(f"start {i}")
            self.log.append(f"fail {i}")
            raise exc if exc is not None else OSError(f"attempt {i} failed")

        return attempt

    def hang(self, i: int) -> Callable[[], Awaitable[object]]:
        async def attempt() -> object:
            self.log.append(f"start {i}")
            self.started(i).set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.log.append(f"cancel {i}")
                raise
            self.log.append(f"released {i}")
            return f"late {i}"

        return attempt

    def succeed_when_released(self, i: int) -> Callable[[], Awaitable[object]]:
        async def attempt() -> object:
            self.log.append(f"start {i}")
            await self.release.wait()
            self.log.append(f"win {i}")
            return f"result {i}"

        return attempt

    def ignore_cancel(self, i: int) -> Callable[[], Awaitable[object]]:
        """An attempt whose connection completed just as it was cancelled: it returns its
        result anyway (as a connect that finished in the same tick would)."""

        async def attempt() -> object:
            self.log.append(f"start {i}")
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.log.append(f"cancel ignored {i}")
            return f"leftover {i}"

        return attempt


async def settle() -> None:
    """Wait until every attempt task has finished (cancelled ones included), so their
    done-callbacks (the race's discard) have run and nothing is left pending."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        async with asyncio.timeout(SAFETY):
            await asyncio.wait(others)


async def race(attempts, delay: float = DELAY, **kwargs):
    async with asyncio.timeout(SAFETY):
        return await staggered_race(attempts, delay, **kwargs)


async def test_first_success_wins_and_later_attempts_never_start() -> None:
    s = Script()
    assert await race([s.succeed(0), s.succeed(1), s.succeed(2)]) == (0, "result 0")
    assert s.log == ["start 0", "win 0"]


async def test_next_attempt_starts_after_the_delay() -> None:
    s = Script()
    index, result = await race([s.hang(0), s.succeed(1)])
    assert (index, result) == (1, "result 1")
    await settle()
    assert s.log == ["start 0", "start 1", "win 1", "cancel 0"]


async def test_failure_starts_the_next_attempt_at_once() -> None:
    """RFC 8305: a failed attempt does not make the next one wait out the delay. With a
    30 s stagger the race only finishes inside the 5 s safety bound if it did not wait."""
    s = Script()
    assert await race([s.fail(0), s.fail(1), s.succeed(2)], delay=NEVER) == (2, "result 2")
    assert s.log == ["start 0", "fail 0", "start 1", "fail 1", "start 2", "win 2"]


async def test_all_failing_raises_race_failed_with_every_error() -> None:
    s = Script()
    errors = [OSError("refused"), TimeoutError("slow"), ValueError("odd")]
    with pytest.raises(RaceFailed) as failed:
        await race([s.fail(i, exc) for i, exc in enumerate(errors)])
    assert failed.value.errors == errors
    assert all(a is b for a, b in zip(failed.value.errors, errors, strict=True))
    assert str(failed.value) == "all 3 attempts failed"


async def test_single_attempt_failing() -> None:
    s = Script()
    with pytest.raises(RaceFailed) as failed:
        await race([s.fail(0)], delay=NEVER)
    assert len(failed.value.errors) == 1


async def test_losers_are_cancelled() -> None:
    s = Script()
    assert await race([s.hang(0), s.hang(1), s.succeed(2)]) == (2, "result 2")
    await settle()
    assert sorted(s.log) == sorted(
        ["start 0", "start 1", "start 2", "win 2", "cancel 0", "cancel 1"]
    )


async def test_result_after_the_winner_is_discarded() -> None:
    """A loser that finished anyway (its cancel arrived too late) must not leak its stream."""
    s = Script()
    discarded: list[object] = []

    def discard(value: object) -> None:
        discarded.append(value)

    assert await race([s.ignore_cancel(0), s.succeed(1)], discard=discard) == (1, "result 1")
    await settle()
    assert discarded == ["leftover 0"]
    assert "cancel ignored 0" in s.log


async def test_two_results_in_the_same_tick_one_wins_the_other_is_discarded() -> None:
    s = Script()
    discarded: list[object] = []

    async def second() -> object:
        s.log.append("start 1")
        s.release.set()  # attempt 0 completes in the same loop iteration as this one
        return "result 1"

    index, result = await race([s.succeed_when_released(0), second], discard=discarded.append)
    assert {result, *discarded} == {"result 0", "result 1"}
    assert result == f"result {index}"
    assert len(discarded) == 1


async def test_cancelled_attempt_is_not_discarded() -> None:
    s = Script()
    discarded: list[object] = []
    await race([s.hang(0), s.succeed(1)], discard=discarded.append)
    await settle()
    assert "cancel 0" in s.log
    assert discarded == []


async def test_cancelling_the_race_cancels_every_attempt() -> None:
    s = Script()
    task = asyncio.ensure_future(staggered_race([s.hang(0), s.hang(1)], DELAY))
    async with asyncio.timeout(SAFETY):
        await s.started(1).wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert sorted(s.log) == ["cancel 0", "cancel 1", "start 0", "start 1"]


async def test_zero_delay_starts_everything_without_waiting() -> None:
    s = Script()
    assert await race([s.hang(0), s.hang(1), s.succeed(2)], delay=0) == (2, "result 2")
    await settle()
    assert s.log[:3] == ["start 0", "start 1", "start 2"]


async def test_nothing_to_race() -> None:
    with pytest.raises(ValueError, match="nothing to race"):
        await staggered_race([], DELAY)
