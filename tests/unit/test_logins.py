"""Login back-off (helper/proxy/logins.py) on a fake clock: free failures, then turns spaced
by a doubling interval, parallel logins queued, impatient ones refused unchecked, a right
login or time clearing the record, bounded memory."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from helper.proxy.logins import FIRST_WAIT, FREE_FAILURES, LONGEST_WAIT, LoginBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def backoff() -> tuple[LoginBackoff, Clock]:
    clock = Clock()
    return LoginBackoff(clock=clock), clock


def test_the_first_logins_are_free() -> None:
    guard, _ = backoff()
    for _ in range(FREE_FAILURES - 1):
        assert guard.turn("10.0.0.5", patience=5) == 0
        assert guard.failed("10.0.0.5") == 0
    assert guard.turn("10.0.0.5", patience=5) == 0
    assert guard.failed("10.0.0.5") == FIRST_WAIT  # the FREE_FAILURES-th: the wait begins


def test_the_interval_doubles_up_to_the_longest() -> None:
    guard, clock = backoff()
    waits = []
    for _ in range(FREE_FAILURES + 10):
        wait = guard.turn("a", patience=LONGEST_WAIT)
        assert wait is not None
        clock.now += wait
        waits.append(guard.failed("a"))
    assert waits[FREE_FAILURES - 1 : FREE_FAILURES + 3] == [1.0, 2.0, 4.0, 8.0]
    assert waits[-1] == LONGEST_WAIT


def test_parallel_logins_each_take_the_next_turn_and_the_rest_are_refused() -> None:
    """40 connections at once, none answered yet: the first FREE_FAILURES at once, then one
    a second, then two..., within the patience; the rest refused unchecked."""
    guard, _ = backoff()
    turns = [guard.turn("a", patience=5) for _ in range(40)]
    checked = [t for t in turns if t is not None]
    assert checked == [0.0] * FREE_FAILURES + [1.0, 3.0]  # 1 s, then 2 s more
    assert turns.count(None) == 40 - len(checked) == guard.refused
    assert guard.checked("a") == len(checked)  # refusals do not count


def test_other_addresses_are_not_slowed() -> None:
    guard, _ = backoff()
    for _ in range(50):
        guard.turn("10.0.0.5", patience=100)
    assert guard.turn("10.0.0.6", patience=0) == 0


def test_a_right_login_clears_the_record() -> None:
    guard, _ = backoff()
    for _ in range(FREE_FAILURES + 3):
        guard.turn("a", patience=100)
        guard.failed("a")
    guard.succeeded("a")
    assert guard.turn("a", patience=0) == 0 and guard.checked("a") == 1


def test_time_without_logins_clears_the_record() -> None:
    guard, clock = backoff()
    for _ in range(FREE_FAILURES + 3):
        guard.turn("a", patience=100)
        guard.failed("a")
    clock.now += guard.forget_after
    assert guard.turn("a", patience=0) == 0 and guard.checked("a") == 1  # a fresh record


def test_memory_is_bounded() -> None:
    guard = LoginBackoff(clock=Clock(), max_clients=100)
    for i in range(1000):
        guard.turn(f"10.0.{i // 256}.{i % 256}", patience=0)
    assert len(guard) == 100
    assert guard.checked("10.0.3.231") == 1  # the latest are kept


_ACTIONS = ("turn", "fail", "ok", "tick")


def _steps(raw: bytes) -> list[tuple[str, float]]:
    """Three bytes a step: the action, then 0-30 s in milliseconds. One draw of bytes, not a
    list of tuples of floats: drawing those was nearly all of this property's time."""
    return [
        (_ACTIONS[raw[i] % 4], int.from_bytes(raw[i + 1 : i + 3], "big") % 30_001 / 1000)
        for i in range(0, len(raw) - 2, 3)
    ]


@given(st.binary(max_size=120).map(_steps))
def test_checked_logins_of_an_address_are_spaced(steps: list[tuple[str, float]]) -> None:
    """Whatever happens, logins of one address checked after FREE_FAILURES were (with no
    right one between) are at least FIRST_WAIT apart, and never more than patience away."""
    guard, clock = backoff()
    checked: list[float] = []
    for action, value in steps:
        if action == "tick":
            clock.now += value
        elif action == "ok":
            guard.succeeded("a")
            checked.clear()
        elif action == "fail":
            guard.failed("a")
        else:
            before = guard.checked("a")
            if before == 0:
                checked.clear()  # forgotten: a new record
            wait = guard.turn("a", patience=value)
            if wait is not None:
                assert 0 <= wait <= value
                if before >= FREE_FAILURES:
                    checked.append(clock.now + wait)
    checked.sort()
    assert all(b - a >= FIRST_WAIT - 1e-9 for a, b in pairwise(checked))
