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


def test_the_hold_follows_the_fastest_connect() -> None:
    assert probe.hold_for(None) == probe.SLOT_HOLD  # nothing measured yet
    assert probe.hold_for(0.01) == probe.HOLD_FLOOR
    assert probe.hold_for(0.1) == pytest.approx(0.1 * probe.HOLD_RTTS)
    assert probe.hold_for(2.0) == probe.SLOT_HOLD  # never longer than without a measure


async def test_once_a_connect_succeeded_a_hanging_one_gives_its_slot_up_sooner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helper.probe.result import Step, TargetResult

    monkeypatch.setattr(probe, "SLOT_HOLD", 60.0)  # what it would wait without a measure
    monkeypatch.setattr(probe, "HOLD_FLOOR", 0.05)
    slots = asyncio.Semaphore(1)
    fast = TargetResult("tcp://a:1")
    fast.steps.append(Step("connect", 5.0, True))  # 5 ms: this network's round trip
    async with probe.Slot(slots, ["tls_handshake"], fast):
        pass
    async with probe.Slot(slots, ["connect"], TargetResult("tcp://b:1")):
        await asyncio.wait_for(slots.acquire(), 10)  # given up after the floor, not 60 s
        slots.release()
    assert slots._value == 1
    other = asyncio.Semaphore(1)  # another service's pool learnt nothing
    slot = probe.Slot(other, ["connect"])
    assert slot._hold() == 60.0
