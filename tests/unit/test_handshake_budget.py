"""The handshake budget, event by event on a fixed clock: the gap and the window per server
name, the start of each window left to clients, a client's first route never held back, a
race's later routes never queued behind background work."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.search.budget import HandshakeBudget


def at(budget: HandshakeBudget, name: str, now: float, **kind: bool) -> float:
    return budget.book(name, now, **kind).at


def test_background_starts_keep_the_gap_and_leave_one_per_window() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert [at(budget, "web.telegram.org", 0.0) for _ in range(4)] == [0.0, 0.4, 1.0, 1.4]


def test_background_in_a_longer_window() -> None:
    budget = HandshakeBudget(limit=3, window=2.0, gap=0.4)
    times = [at(budget, "a.example", 0.0) for _ in range(4)]
    assert times == [0.0, 0.4, 2.0, 2.4]  # two per window: the third is the clients'


def test_names_have_budgets_of_their_own_and_case_does_not_matter() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert at(budget, "a.example", 0.0) == 0.0
    assert at(budget, "b.example", 0.0) == 0.0
    assert at(budget, "A.EXAMPLE", 0.0) == 0.4


def test_a_clients_first_route_goes_at_once_and_is_counted() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    assert at(budget, "a.example", 0.0) == 0.0
    assert at(budget, "a.example", 0.1, first=True) == 0.1
    assert at(budget, "a.example", 0.1) == 1.0  # after both, and two per window
    assert budget.counted == 3 and budget.held == 1


def test_a_races_later_routes_never_queue_behind_background_work() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    background = [budget.book("a.example", 0.0) for _ in range(6)]  # up to 2.4 s ahead
    assert [b.at for b in background] == [0.0, 0.4, 1.0, 1.4, 2.0, 2.4]
    # a client at 0.5: its first route at once, its second route the gap after that
    assert at(budget, "a.example", 0.5, first=True) == 0.5
    assert at(budget, "a.example", 0.5, client=True) == 1.0  # 3 in (0, 1.0]
    # the background starts they crowd moved later, keeping the rules with them
    later = sorted(b.at for b in background[2:])
    assert later[0] >= 1.0 + 0.4 and later == sorted(set(later))
    ahead = sorted(s for s in budget.starts("a.example") if s >= 0.5)  # what could move
    assert all(b - a >= 0.4 - 1e-9 for a, b in itertools.pairwise(ahead))


def test_old_starts_are_forgotten() -> None:
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4)
    budget.book("a.example", 0.0)
    assert at(budget, "a.example", 10.0) == 10.0
    assert budget.starts("a.example") == [10.0]


def test_a_limit_of_zero_turns_it_off() -> None:
    budget = HandshakeBudget(limit=0)
    assert [at(budget, "a.example", 5.0) for _ in range(5)] == [5.0] * 5


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        HandshakeBudget(limit=-1)


async def test_take_waits_for_a_booking_a_client_moved() -> None:
    now = [0.0]
    budget = HandshakeBudget(limit=3, window=1.0, gap=0.4, clock=lambda: now[0])
    budget.book("a.example", 0.0)
    waiting = asyncio.ensure_future(budget.take("a.example"))  # booked for 0.4
    await asyncio.sleep(0)
    now[0] = 0.3
    budget.book("a.example", 0.3, first=True)  # pushes the waiting one to 1.0
    now[0] = 0.45
    await asyncio.sleep(0.2)  # it slept its first 0.4 s (in real time: 0.4 of the loop's)
    assert budget.starts("a.example") == [0.0, 0.3, 1.0]
    assert not waiting.done()
    now[0] = 1.0
    await asyncio.wait_for(waiting, 5)


_KINDS = ("background", "client", "first")


def _arrivals(raw: bytes) -> list[tuple[float, str]]:
    """Three bytes an arrival: 0-10 s in milliseconds, then its kind. One draw of bytes, not
    a list of tuples of floats: drawing those was most of the property's time."""
    return [
        (int.from_bytes(raw[i : i + 2], "big") % 10_001 / 1000, _KINDS[raw[i + 2] % 3])
        for i in range(0, len(raw) - 2, 3)
    ]


@given(
    limit=st.integers(1, 5),
    window=st.floats(0.0, 3.0),
    gap=st.floats(0.0, 1.0),
    arrivals=st.binary(max_size=75).map(_arrivals),
)
def test_the_rules_hold_whatever_arrives(
    limit: int, window: float, gap: float, arrivals: list[tuple[float, str]]
) -> None:
    """Whatever arrives when: a start is never before its request, a first route is never
    later; background starts keep the gap and their share of the window with every start
    (clients' included), and later race routes keep the gap with what had started."""
    budget = HandshakeBudget(limit=limit, window=window, gap=gap)
    background, every = [], []  # (booking, when it was asked for, in order)
    for now, kind in sorted(arrivals):
        booking = budget.book("a.example", now, client=kind == "client", first=kind == "first")
        assert booking.at >= now
        if kind == "first":
            assert booking.at == now
        if kind == "background":
            background.append(booking)
        every.append((booking, now))
    cap = max(1, limit - 1)
    for i, (booking, _) in enumerate(every):
        if not booking.background:
            continue
        # every start asked for before it, or while it was still to come (a start that has
        # happened cannot move out of a client's way)
        others = [
            b.at for j, (b, asked) in enumerate(every) if j != i and (j < i or asked < booking.at)
        ]
        assert all(abs(booking.at - s) >= gap - 1e-6 for s in others), (booking.at, others)
    only = sorted(b.at for b in background)
    for i, first in enumerate(only):
        assert len([s for s in only[i:] if s < first + window - 1e-6]) <= cap


async def test_handshakes_under_way_stay_within_the_limit_and_keep_the_gap() -> None:
    """`handshake`, as the fronted tunnel holds it: never more than `limit` under way to one
    name, however long each takes; a slot freed lets the next one start."""
    now = [0.0]
    budget = HandshakeBudget(limit=2, window=0.0, gap=0.0, clock=lambda: now[0])
    release = asyncio.Event()
    most = 0

    async def one() -> None:
        nonlocal most
        async with budget.handshake("Front.example"):
            most = max(most, budget.under_way("front.example"))
            await release.wait()

    tasks = [asyncio.ensure_future(one()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert budget.under_way("front.example") == 2 and most == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert most == 2 and budget.under_way("front.example") == 0


async def test_a_cancelled_handshake_frees_its_slot_and_its_turn() -> None:
    budget = HandshakeBudget(limit=1, window=0.0, gap=0.0)
    hold = asyncio.Event()

    async def one() -> None:
        async with budget.handshake("front.example"):
            await hold.wait()

    first = asyncio.ensure_future(one())
    waiting = asyncio.ensure_future(one())
    await asyncio.sleep(0.01)
    waiting.cancel()  # gave up while waiting for the slot
    first.cancel()  # gave up during its handshake
    await asyncio.gather(first, waiting, return_exceptions=True)
    assert budget.under_way("front.example") == 0
    hold.set()
    await asyncio.wait_for(one(), 5)  # the slot is free again


async def test_a_budget_turned_off_holds_no_handshake() -> None:
    budget = HandshakeBudget(limit=0)
    hold = asyncio.Event()

    async def one() -> None:
        async with budget.handshake("front.example"):
            await hold.wait()

    tasks = [asyncio.ensure_future(one()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert budget.under_way("front.example") == 10
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
