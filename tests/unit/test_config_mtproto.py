"""[mtproto_proxy] (helper/config/mtproto_proxy.py): the users and their secrets in every
form, the DC table's overrides, and the problems each bad value is reported with."""

from __future__ import annotations

import textwrap

import pytest

from helper.config import ConfigError, parse_config
from helper.config.show import show
from tests.unit.test_config_layers import layered
from transports import Endpoint
from transports.mtproto.secret import SecretMode

ROUTE = '[[route]]\nname = "direct"\nchain = "direct"\n'
DD = "dd000102030405060708090a0b0c0d0e0f"
EE = "ee101112131415161718191a1b1c1d1e1f" + b"www.example.org".hex()


def config(text: str):
    return parse_config(textwrap.dedent(text) + "\n" + ROUTE, "test.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config(text)
    return err.value.problems


def test_off_unless_configured() -> None:
    assert config("").mtproto_proxy is None


def test_users_and_defaults() -> None:
    mt = config(f'[mtproto_proxy]\nsecrets = {{ alice = "{DD}", bob = "{EE}" }}\n').mtproto_proxy
    assert mt is not None
    assert mt.listen == Endpoint("127.0.0.1", 8443)
    assert mt.secrets["alice"].mode is SecretMode.PADDED
    assert mt.secrets["bob"].domain == "www.example.org"
    assert [s.domain for s in mt.fake_tls] == ["www.example.org"]
    assert (mt.time_skew, mt.replay_cache, mt.mask, mt.host) == (1200.0, 65536, None, None)
    assert "000102" not in repr(mt)  # secrets stay out of repr


def test_dcs_and_mask() -> None:
    mt = config(
        f'[mtproto_proxy]\nsecrets = {{ a = "{EE}" }}\nmask = "127.0.0.1:8444"\n'
        'dcs = { 2 = "127.0.0.5", 4 = "[::1]:9443" }\n'
    ).mtproto_proxy
    assert mt is not None
    assert mt.mask == Endpoint("127.0.0.1", 8444)
    assert mt.dcs == {2: "127.0.0.5:443", 4: "[::1]:9443"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[mtproto_proxy]\n", "mtproto_proxy.secrets: is required"),
        ("[mtproto_proxy]\nsecrets = {}\n", "mtproto_proxy.secrets: expected a table"),
        ('[mtproto_proxy]\nsecrets = { a = "00" }\n', "mtproto_proxy.secrets.a: 1 bytes is no"),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}", b = "{DD}" }}\n',
            "mtproto_proxy.secrets.b: the same key as a's",
        ),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\ndcs = {{ x = "1.2.3.4" }}\n',
            "mtproto_proxy.dcs.x: a DC number",
        ),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\ndcs = {{ 2 = "dc.example" }}\n',
            "mtproto_proxy.dcs.2: 'dc.example': a DC is an IP address",
        ),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\nlisten = "example.org:1"\n',
            "mtproto_proxy.listen",
        ),
        (f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\nsecret = 1\n', "unknown key"),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\nhost = ""\n',
            "mtproto_proxy.host: '' is not an IP address or a host name",
        ),
        (
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\nhost = "my proxy"\n',
            "mtproto_proxy.host: 'my proxy' is not an IP address or a host name",
        ),
    ],
)
def test_problems_name_the_key(text: str, says: str) -> None:
    found = problems(text)
    assert any(says in p for p in found), found


def test_config_show_hides_the_secrets() -> None:
    text = show(layered(f'[mtproto_proxy]\nsecrets = {{ alice = "{DD}" }}\n'))
    assert "[mtproto_proxy]" in text and DD not in text and 'secrets = "***"' in text
    assert "# [mtproto_proxy]: off" in show(layered(""))


def test_the_links_host_is_an_address_or_a_name() -> None:
    for given, kept in (
        ("Proxy.Example.org", "proxy.example.org"),
        ("[2001:db8::1]", "2001:db8::1"),
    ):
        mt = config(
            f'[mtproto_proxy]\nsecrets = {{ a = "{DD}" }}\nhost = "{given}"\n'
        ).mtproto_proxy
        assert mt is not None and mt.host == kept
