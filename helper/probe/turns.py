"""When each route's probe of a service starts, on a network detour has not seen: in the
routes' order, a stagger apart, or at once when every route before has its verdict -- as a
race gives the first routes the first attempt (docs/routing.md "The built-in cascade").

Routes take their turns in lanes: those that carry the same set of the service's targets
share one, in their order; a route that carries a different set -- a `tgws` route, which
carries only Telegram's DCs (through the web endpoints, not the DCs' own addresses) -- is in
a lane of its own kind, whose first route starts at once beside the first route of the
others. Its probe reaches other hosts than theirs: waiting behind them only delays the
verdict where it is the way out (black-holed DCs). A route that can carry none of the
service's targets takes no turn at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..routing import Route
    from ..services import Service

__all__ = ["Turns", "lanes", "turns", "wait_turn"]


def lanes(service: Service, routes: Sequence[Route]) -> list[tuple[int, int] | None]:
    """Each route's (lane, place in the lane) in a staggered probe of `service`; None for a
    route that can carry none of the service's targets (a `tgws` route and a service that is
    not Telegram): its probe is only "not applicable", so it takes no turn. Lanes are
    numbered in the order their first routes come."""
    kinds: dict[tuple[bool, ...], int] = {}
    filled: list[int] = []
    order: list[tuple[int, int] | None] = []
    for route in routes:
        carried = tuple(route.not_applicable(t.endpoint) is None for t in service.probes)
        if service.probes and not any(carried):
            order.append(None)
            continue
        lane = kinds.setdefault(carried, len(kinds))
        if lane == len(filled):
            filled.append(0)
        order.append((lane, filled[lane]))
        filled[lane] += 1
    return order


def turns(service: Service, routes: Sequence[Route]) -> list[int | None]:
    """Each route's place in its lane (lanes()); None for a route that takes no turn."""
    return [None if place is None else place[1] for place in lanes(service, routes)]


class Turns:
    """The turns of one staggered probe of a service's routes: `wait(i)` until route i may
    start, `done(i)` once it has its verdict."""

    def __init__(self, service: Service, routes: Sequence[Route]) -> None:
        self.places = lanes(service, routes)
        count: dict[int, int] = {}
        for place in self.places:
            if place is not None:
                count[place[0]] = count.get(place[0], 0) + 1
        self._finished = {lane: [asyncio.Event() for _ in range(n)] for lane, n in count.items()}

    async def wait(self, index: int, stagger: float) -> None:
        place = self.places[index]
        if place is not None:
            await wait_turn(place[1], self._finished[place[0]], stagger)

    def done(self, index: int) -> None:
        place = self.places[index]
        if place is not None:
            self._finished[place[0]][place[1]].set()


async def wait_turn(index: int, finished: list[asyncio.Event], stagger: float) -> None:
    """Until route `index`'s probe may start: `index` x `stagger` after the first, or as soon
    as every route before it has its verdict (`finished[i]` set)."""
    if not index or stagger <= 0:
        return
    # No task per event: a probe cancelled while it waits (the engine stops) leaves nothing.
    try:
        async with asyncio.timeout(index * stagger):
            for event in finished[:index]:
                await event.wait()
    except TimeoutError:
        pass  # its turn came before the earlier routes ended
