"""`[telegram] dcs`: the DC address table overridable in the config, its errors naming the
key, and the table every tgws route and the MTProto proxy endpoint then use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.config import ConfigError, parse_config
from helper.config.telegram import parse_dc
from helper.routing import Router
from transports import Endpoint
from transports.mtproto import DEFAULT_DCS, DataCentre
from transports.mtproto.obfuscated2 import Header, Tag
from transports.mtproto.proxy import dc_address

BASE = '[base]\nconfig = "none"\n[[route]]\nname = "tg"\nchain = "tgws"\n'


def config(dcs: str):
    return parse_config(BASE + f"[telegram]\ndcs = {dcs}\n", "t.toml")


def test_addresses_join_the_built_in_table_and_come_first() -> None:
    table = config(
        '{ "10.0.0.2" = "2", "2001:db8::4" = "4 media", "10.0.0.9" = "2 test media",'
        ' "149.154.167.51" = "4" }'
    ).telegram.dc_table()
    assert table.lookup("10.0.0.2") == DataCentre(2)
    assert table.lookup("2001:db8::4") == DataCentre(4, media=True)
    assert table.lookup("::ffff:10.0.0.9") == DataCentre(2, media=True, test=True)
    assert table.lookup("149.154.167.51") == DataCentre(4)  # moved from DC 2
    assert table.lookup("149.154.175.50") == DataCentre(1)  # the built-in rest stays
    assert table.addresses_of(DataCentre(2))[0] == "10.0.0.2"
    # The endpoint dials the configured address for a client that asks for DC 2.
    assert dc_address(Header(Tag.INTERMEDIATE, 2), table) == "10.0.0.2"
    assert parse_config(BASE, "t.toml").telegram.dc_table() is DEFAULT_DCS


def test_tgws_routes_use_the_table() -> None:
    router = Router.from_config(config('{ "10.0.0.2" = "2" }'))
    tgws = router.routes[0].dialer
    while not hasattr(tgws, "table"):
        tgws = tgws.inner
    assert tgws.not_applicable(Endpoint("10.0.0.2", 443)) is None
    assert tgws.not_applicable(Endpoint("10.0.0.3", 443)) is not None


@pytest.mark.parametrize(
    ("dcs", "says"),
    [
        ('"2"', "telegram.dcs: expected an address and its DC"),
        ('{ "kws2.web.telegram.org" = "2" }', 'telegram.dcs."kws2.web.telegram.org": '),
        ('{ "10.0.0.1" = "two" }', "telegram.dcs.\"10.0.0.1\": 'two': the DC's number first"),
        ('{ "10.0.0.1" = "0" }', "a DC number is 1-9999"),
        ('{ "10.0.0.1" = "2 cdn" }', "'cdn' is no DC kind (media, test)"),
        ('{ "10.0.0.1" = "2 media media" }', "a kind given twice"),
        ('{ "10.0.0.1" = true }', 'write the DC as "N"'),
    ],
)
def test_bad_values_name_the_key(dcs: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(dcs)
    assert says in str(caught.value)
    assert "Traceback" not in str(caught.value)


@given(st.text(max_size=30) | st.integers() | st.booleans() | st.floats())
def test_any_value_is_a_dc_or_a_reason(value) -> None:
    try:
        dc = parse_dc(value)
    except ValueError as exc:
        message = str(exc)
        assert message
        return
    assert 0 < dc.id < 10000
