"""Staggered racing (RFC 8305's connection attempt algorithm, generalised).

Start the first attempt; start the next one when `delay` passes or as soon as the running
ones have failed; the first success wins and the rest are cancelled. Direct connections race
addresses with it; route selection races routes with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["RaceFailed", "staggered_race"]


class RaceFailed(Exception, Generic[T]):
    """Every attempt failed; `errors[i]` is attempt i's exception (None if never started)."""

    def __init__(self, errors: list[BaseException | None]) -> None:
        self.errors = errors
        super().__init__(f"all {len(errors)} attempts failed")


async def staggered_race(
    attempts: Sequence[Callable[[], Awaitable[T]]],
    delay: float,
    *,
    discard: Callable[[T], object] | None = None,
) -> tuple[int, T]:
    """Race `attempts`; return (index, result) of the first that succeeds.

    A result that arrives after the winner (two connects completing in the same tick, or a
    cancelled attempt that had already finished) is passed to `discard` so nothing leaks.
    Raises RaceFailed when every attempt fails.
    """
    if not attempts:
        raise ValueError("nothing to race")
    if len(attempts) == 1:
        # Nothing to race: no task of its own, no wait (a route with one address, a
        # destination with one route -- most connections).
        try:
            return 0, await attempts[0]()
        except Exception as exc:
            raise RaceFailed([exc]) from None
    errors: list[BaseException | None] = [None] * len(attempts)
    pending: dict[asyncio.Future[T], int] = {}
    started = 0

    def start_next() -> None:
        nonlocal started
        fut = asyncio.ensure_future(attempts[started]())
        pending[fut] = started
        started += 1

    def discard_late(fut: asyncio.Future[T]) -> None:
        if not fut.cancelled() and fut.exception() is None and discard is not None:
            discard(fut.result())

    start_next()
    try:
        while pending:
            timeout = delay if started < len(attempts) else None
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                start_next()
                continue
            winner: tuple[int, T] | None = None
            for fut in done:
                index = pending.pop(fut)
                if fut.cancelled():
                    errors[index] = asyncio.CancelledError()
                elif (exc := fut.exception()) is not None:
                    errors[index] = exc
                elif winner is None:
                    winner = (index, fut.result())
                elif discard is not None:
                    discard(fut.result())
            if winner is not None:
                return winner
            if started < len(attempts):
                # An attempt failed: RFC 8305 starts the next one at once, not after the delay.
                start_next()
        raise RaceFailed(errors)
    finally:
        for fut in pending:
            fut.cancel()
            fut.add_done_callback(discard_late)
