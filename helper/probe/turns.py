"""When each route's probe of a service starts, on a network detour has not seen: in the
routes' order, a stagger apart, or at once when every route before has its verdict -- as a
race gives the first routes the first attempt (docs/routing.md "The built-in cascade").

On a machine that is losing time, the stagger grows with the event loop time lost while a
route waits for its turn (transports/deadlines.py's Patient, the prober's measure): a loop
that could not run while the earlier routes' probes started has not given them their
stagger, and the routes after them start later instead of all at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from transports.deadlines import LostTime, Patient

if TYPE_CHECKING:
    from ..routing import Route
    from ..services import Service

__all__ = ["turns", "wait_turn"]


def turns(service: Service, routes: Sequence[Route]) -> list[int | None]:
    """Each route's turn in a staggered probe of `service`: its place among the routes that
    can carry at least one of the service's targets; None for a route that can carry none (a
    `tgws` route and a service that is not Telegram), whose probe is only "not applicable" --
    it takes no turn, so the routes after it do not wait a stagger for it."""
    order: list[int | None] = []
    turn = 0
    for route in routes:
        if service.probes and all(
            route.not_applicable(target.endpoint) is not None for target in service.probes
        ):
            order.append(None)
            continue
        order.append(turn)
        turn += 1
    return order


async def wait_turn(
    index: int, finished: list[asyncio.Event], stagger: float, lost: LostTime | None = None
) -> None:
    """Until route `index`'s probe may start: `index` x `stagger` after the first, or as soon
    as every route before it has its verdict (`finished[i]` set). `lost`: the prober's
    measure of the loop time lost, which the wait grows by (at most its `patience` times)."""
    if not index or stagger <= 0:
        return
    wait = index * stagger
    # No task per event: a probe cancelled while it waits (the engine stops) leaves nothing.
    try:
        async with asyncio.timeout(wait) if lost is None else Patient(wait, lost):
            for event in finished[:index]:
                await event.wait()
    except TimeoutError:
        pass  # its turn came before the earlier routes ended
