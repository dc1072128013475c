"""The `front:` route against a censor that freezes every flow to the CDN front after 16 KB
from the server (alone, and with an allow-list that lets only the CDN through), in both lab
modes: the probe's transfer freezes on the long tunnel, the dialer (carrier=auto) confirms
the freeze at once and moves to capped carriers, and the probe's verdict is that the route
works (its log names the freeze), as does the next probe's."""

from __future__ import annotations

import logging

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
    lab: Lab | NetnsLab, allow_list: bool, caplog: pytest.LogCaptureFixture
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

        with caplog.at_level(logging.WARNING):
            first = next(r for r in await engine.prober.probe_service(service, [route]))
        # The probe's transfer froze on the long tunnel; the dialer confirmed it at once (no
        # answer to a PING), went capped, and the probe's second run through capped carriers
        # is its verdict.
        assert first.ok, first.diagnosis
        assert mode.froze.is_set() and mode.capped_now()
        assert mode.frozen_after is not None and mode.frozen_after < 24 * 1024
        said = caplog.text
        assert "the tunnel froze after" in said and "capped carriers from now on" in said
        assert "probe signal via front: stopped after" in said, said

        again = next(r for r in await engine.prober.probe_service(service, [route]))
        assert again.ok, again.diagnosis
    finally:
        await engine.stop()
        await lab.set_scenario("baseline")
