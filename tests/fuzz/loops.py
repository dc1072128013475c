"""One event loop for all of a property's examples: a new loop per example (asyncio.run)
cost more than the code under test (a selector and a socket pair, made and closed)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def run_example(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, T]) -> T:
    """Run one example's coroutine on the loop the property reuses, then cancel and finish
    what it left running, as asyncio.run does: the next example starts with nothing
    pending."""
    try:
        return loop.run_until_complete(main)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


@pytest.fixture(scope="module", name="example_loop")
def example_loop_fixture() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop the module's properties share across their examples (import this into
    a test module; its tests ask for `example_loop`)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
