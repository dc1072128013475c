"""A service's probe slots (helper/probe/probe.py): a target still waiting for the network's
first answer gives its slot up after SLOT_HOLD, so a dead route's timeouts do not hold up
the routes after it; a target that is moving bytes keeps it."""

from __future__ import annotations

import asyncio

import pytest

from helper.probe import slots as probe


async def test_a_target_waiting_for_an_answer_gives_its_slot_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probe, "SLOT_HOLD", 0.01)
    slots = asyncio.Semaphore(1)
    step = ["connect"]
    async with probe.Slot(slots, step):
        await asyncio.wait_for(slots.acquire(), 10)  # given up while the connect hangs
        slots.release()
    assert not slots.locked()  # and not released twice
    assert slots._value == 1


async def test_a_target_moving_bytes_keeps_its_slot() -> None:
    slots = asyncio.Semaphore(1)
    step = ["volume"]
    slot = probe.Slot(slots, step)
    async with slot:
        slot._check()  # (what the timer does after SLOT_HOLD)
        assert slots.locked()
    assert not slots.locked() and slots._value == 1
