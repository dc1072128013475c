"""The handshake budget, event by event on a fixed clock: the gap and the window per server
name, the slot left to clients, a client's first attempt never held back."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from helper.search.budget import HandshakeBudget


def test_background_starts_keep_the_gap() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert [budget.book("web.telegram.org", 0.0) for _ in range(3)] == [0.0, 0.4, 1.0]


def test_background_leaves_one_of_the_window_to_clients() -> None:
    budget = HandshakeBudget(limit=3, window=2.0, gap=0.4)
    times = [budget.book("a.example", 0.0) for _ in range(4)]
    assert times == [0.0, 0.4, 2.0, 2.4]  # two per window, the third slot is the clients'


def test_names_have_budgets_of_their_own_and_case_does_not_matter() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert budget.book("a.example", 0.0) == 0.0
    assert budget.book("b.example", 0.0) == 0.0
    assert budget.book("A.EXAMPLE", 0.0) == 0.4


def test_a_clients_first_attempt_goes_at_once_and_is_counted() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert budget.book("a.example", 0.0) == 0.0
    assert budget.book("a.example", 0.1, urgent=True) == 0.1
    assert budget.book("a.example", 0.1) == 1.0  # after both, and two per window
    assert budget.counted == 3 and budget.held == 1


def test_old_starts_are_forgotten() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    budget.book("a.example", 0.0)
    assert budget.book("a.example", 10.0) == 10.0
    assert budget.starts("a.example") == [10.0]


def test_a_limit_of_zero_turns_it_off() -> None:
    budget = HandshakeBudget(limit=0)
    assert [budget.book("a.example", 5.0) for _ in range(5)] == [5.0] * 5


@given(
    limit=st.integers(1, 5),
    window=st.floats(0.0, 3.0),
    gap=st.floats(0.0, 1.0),
    arrivals=st.lists(st.tuples(st.floats(0.0, 10.0), st.booleans()), max_size=25),
)
def test_background_starts_never_break_the_rules(
    limit: int, window: float, gap: float, arrivals: list[tuple[float, bool]]
) -> None:
    """Whatever arrives when: every background start is at or after its request, at least
    `gap` from every other start, and no window holds more starts than the limit allows
    background work (clients' first attempts aside)."""
    budget = HandshakeBudget(limit=limit, window=window, gap=gap)
    background: list[float] = []
    for now, urgent in sorted(arrivals):
        at = budget.book("a.example", now, urgent=urgent)
        if urgent:
            assert at == now
            continue
        assert at >= now
        background.append(at)
    only = sorted(background)
    assert all(b - a >= gap - 1e-6 for a, b in itertools.pairwise(only))
    cap = max(1, limit - 1)
    for i, first in enumerate(only):
        inside = [s for s in only[i:] if s < first + window - 1e-6]
        assert len(inside) <= cap
