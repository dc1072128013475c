"""The `front:` route against a censor that freezes every flow to the CDN front after 16 KB
from the server (alone, and with an allow-list that lets only the CDN through), in both lab
modes: the probe names the freeze of the long tunnel, the dialer (carrier=auto) moves to
capped carriers, and the next probe finds the route working."""

from __future__ import annotations

import asyncio

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from helper.lab.netns import NetnsLab
from helper.lab.scenario import parse_scenario
from transports.fronted.modes import CarrierMode

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _carrier_mode(dialer: object) -> CarrierMode | None:
    for _ in range(8):
        mode = getattr(dialer, "carrier", None)
        if isinstance(mode, CarrierMode):
            return mode
        dialer = getattr(dialer, "inner", None)
        if dialer is None:
            return None
    return None


@pytest.mark.slow
@pytest.mark.parametrize("allow_list", [False, True], ids=["freeze", "freeze+allow-list"])
async def test_the_probe_names_the_freeze_and_the_route_then_works_capped(
    lab: Lab | NetnsLab, allow_list: bool
) -> None:
    frozen = parse_scenario(
        'summary = "flows to the CDN freeze after 16 KB"\n'
        + ('[allow]\nhosts = ["cdn"]\n' if allow_list else "")
        + '[[rule]]\nname = "cdn"\naction = "freeze"\nhosts = ["cdn"]\nafter = "16KiB"\n',
        "cdn-freeze",
        lab.table,
    )
    await lab.set_scenario(frozen)
    engine = Engine(parse_config(lab.helper_config(listen="127.0.0.1:0")), probe_on_start=False)
    try:
        service = next(s for s in engine.router.services if s.name == "signal")
        route = next(r for r in engine.router.routes if r.name == "front")
        mode = _carrier_mode(route.dialer)
        assert mode is not None and mode.mode == "auto"

        first = next(r for r in await engine.prober.probe_service(service, [route]))
        assert not first.ok
        assert "froze" in first.diagnosis, first.diagnosis

        async with asyncio.timeout(30):  # the dialer's own watch sees the long tunnel freeze
            await mode.froze.wait()
        assert mode.capped_now()

        again = next(r for r in await engine.prober.probe_service(service, [route]))
        assert again.ok, again.diagnosis
    finally:
        await engine.stop()
        await lab.set_scenario("baseline")
