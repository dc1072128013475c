"""Long timeouts for slow networks reach every step: `[dns] timeout` bounds lookups, a
`resolve:` layer's lookup gets half its route's timeout when that is longer, and a probe's
freeze check waits a share of the probe's timeout before it calls a download stalled."""

from __future__ import annotations

import pytest

from helper.config import ConfigError, parse_config
from helper.probe.probe import STALL, Prober
from transports.chain import DialOptions, base_dialer, parse_chain

DOH = "resolve:doh=https://1.1.1.1/dns-query"
ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'


def lookup_timeout(chain: str, options: DialOptions) -> float:
    dialer = base_dialer(parse_chain(chain).build(options))
    return dialer.resolver.timeout


def test_dns_timeout_is_a_key_with_a_default() -> None:
    assert parse_config(ROUTE).dns.timeout == 5.0
    assert parse_config(ROUTE + '[dns]\ntimeout = "12s"\n').dns.timeout == 12.0


def test_a_bad_dns_timeout_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dns\.timeout"):
        parse_config(ROUTE + '[dns]\ntimeout = "soon"\n')


@pytest.mark.parametrize(
    ("route", "dns", "expected"),
    [(10.0, 5.0, 5.0), (3.0, 5.0, 5.0), (30.0, 5.0, 15.0), (30.0, 20.0, 20.0)],
)
def test_a_resolve_layer_gets_half_its_routes_timeout_when_longer(
    route: float, dns: float, expected: float
) -> None:
    options = DialOptions(connect_timeout=route, handshake_timeout=route, dns_timeout=dns)
    assert lookup_timeout(DOH, options) == expected


def test_the_stall_of_the_freeze_check_scales_with_the_probe_timeout() -> None:
    assert Prober(timeout=3.0).stall == STALL
    assert Prober(timeout=5.0).stall == STALL
    assert Prober(timeout=30.0).stall == 12.0
