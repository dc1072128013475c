"""A lab config whose timeouts a busy machine cannot reach: for tests whose verdicts need no
timeout. The lab answers at once (hence its 3 s probes), but the lab, the engine and the test
share one event loop, and on two cores that other processes keep busy (a load average of 10
and more) a probe through the lab's SOCKS proxy or a DoH lookup can take longer than that:
the route then looks black-holed, the lookup times out, and the test sees what the machine
did, not what the scenario says (docs/testing.md "Tests under load")."""

from __future__ import annotations

import dataclasses

from helper.config import Config

# Far above anything the lab takes however busy the machine; only a route the scenario
# black-holes waits this long, and a test that asserts on such a verdict does not use this.
SLOW = 240.0


def unhurried(config: Config, seconds: float = SLOW) -> Config:
    """`config` with its probe timeout, its resolver's timeout and every route's timeout at
    `seconds`: a route is timed out or given up on only when it really does not answer. (The
    stagger stays: it also spaces a probe round's routes, which would then wait for a
    black-holed route's timeout before the next starts.)"""
    return dataclasses.replace(
        config,
        probe=dataclasses.replace(config.probe, timeout=seconds),
        dns=dataclasses.replace(config.dns, timeout=seconds),
        routes=tuple(dataclasses.replace(r, timeout=seconds) for r in config.routes),
    )
