"""The [listen] keys of router mode: transparent, remote_default, remote_public, limits, and
the exposure rule for the transparent listener."""

from __future__ import annotations

import ipaddress
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.config.values import public_network
from tests.unit.test_config import config, problems
from transports import Endpoint
from transports.guard import AddressPolicy, embedded_ipv4


def test_defaults() -> None:
    listen = config("").listen
    assert listen.transparent is None
    assert listen.remote_default == "deny"
    assert listen.remote_public == ()
    assert (listen.max_connections, listen.max_connections_per_client) == (1024, 256)
    assert (listen.max_handshakes, listen.max_handshakes_per_client) == (128, 32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent is Linux-only")
def test_router_keys() -> None:
    listen = config(
        """
        [listen]
        mixed = "192.168.1.1:1080"
        allow = ["192.168.1.0/24"]
        transparent = "0.0.0.0:1090"
        remote_default = "default"
        remote_public = ["10.203.0.0/24"]
        max_connections = 0
        max_handshakes_per_client = 4
        """
    ).listen
    assert listen.transparent == Endpoint("0.0.0.0", 1090)
    assert listen.remote_default == "default"
    assert listen.remote_public == (ipaddress.ip_network("10.203.0.0/24"),)
    assert listen.max_connections == 0 and listen.max_handshakes_per_client == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('remote_default = "allow"', 'listen.remote_default: "deny"'),
        ('remote_public = ["127.0.0.0/8"]', "listen.remote_public"),
        ('remote_public = ["169.254.0.0/16"]', "it holds link-local addresses (169.254.0.0/16)"),
        ('remote_public = ["0.0.0.0/0"]', "listen.remote_public"),
        ("max_connections = -1", "listen.max_connections: expected a whole number >= 0"),
        ('max_handshakes = "10"', "listen.max_handshakes: expected a whole number"),
        ("max_connections_per_client = true", "listen.max_connections_per_client"),
    ],
)
def test_bad_values_name_the_key(text: str, expected: str) -> None:
    found = problems(f"[listen]\n{text}\n")
    assert any(expected in p for p in found), found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent is Linux-only")
def test_transparent_off_loopback_needs_an_allow_list() -> None:
    found = problems('[listen]\ntransparent = "0.0.0.0:1090"\nusers = [{name="a", password="b"}]\n')
    assert any(p.startswith("listen.transparent:") and "listen.allow" in p for p in found), found
    ok = config('[listen]\ntransparent = "127.0.0.1:1090"\n').listen
    assert ok.transparent == Endpoint("127.0.0.1", 1090)


def test_transparent_elsewhere_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    found = problems('[listen]\ntransparent = "127.0.0.1:1090"\n')
    assert any("transparent redirect needs Linux" in p for p in found), found


@pytest.mark.parametrize(
    ("ranges", "index", "held"),
    [
        pytest.param('["0.0.0.0/1", "128.0.0.0/1"]', 0, "loopback", id="lower-half"),
        pytest.param('["10.0.0.0/8", "128.0.0.0/1"]', 1, "link-local", id="upper-half"),
        pytest.param('["169.254.0.0/15"]', 0, "link-local", id="link-local-supernet"),
        pytest.param('["169.254.169.254/32"]', 0, "link-local", id="metadata"),
        pytest.param('["fe80::/9"]', 0, "link-local", id="ipv6-link-local-supernet"),
        pytest.param('["::/0"]', 0, "loopback", id="ipv6-everything"),
        pytest.param('["224.0.0.0/3"]', 0, "multicast", id="multicast-supernet"),
        pytest.param('["64:ff9b::/96"]', 0, "carry IPv4 loopback", id="nat64-of-everything"),
        pytest.param('["64:ff9b::a9fe:0/112"]', 0, "carry IPv4 link-local", id="nat64-link-local"),
        pytest.param('["::ffff:0:a9fe:0/112"]', 0, "carry IPv4 link-local", id="siit"),
        pytest.param('["64:ff9b:1::/64"]', 0, "carry IPv4", id="nat64-local-use"),
        pytest.param('["2002:a9fe::/32"]', 0, "carry IPv4 link-local", id="6to4"),
    ],
)
def test_remote_public_may_not_overlap_what_is_never_reached(
    ranges: str, index: int, held: str
) -> None:
    found = problems(f"[listen]\nremote_public = {ranges}\n")
    assert any(p.startswith(f"listen.remote_public[{index}]: ") and held in p for p in found), found


@pytest.mark.parametrize(
    "ranges", ['["10.203.0.0/24", "fd23::/64"]', '["64:ff9b::a00:0/104"]', '["198.18.0.0/15"]']
)
def test_remote_public_lab_ranges(ranges: str) -> None:
    assert config(f"[listen]\nremote_public = {ranges}\n").listen.remote_public


@given(
    st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 2**128 - 1), st.integers(0, 128)
)
def test_an_accepted_remote_public_range_never_holds_what_is_never_reached(
    v4: int, v4_length: int, v6: int, v6_length: int
) -> None:
    """Whatever range is accepted, none of its addresses (first, last, middle), nor any IPv4
    address one of them carries, is loopback, link-local, multicast or unspecified."""
    never = ("loopback", "link-local", "multicast", "unspecified")
    for net in (
        ipaddress.ip_network((v4, v4_length), strict=False),
        ipaddress.ip_network((v6, v6_length), strict=False),
    ):
        try:
            public_network(str(net))
        except ValueError:
            continue
        first, last = int(net.network_address), int(net.broadcast_address)
        for value in (first, last, (first + last) // 2):
            address = (
                ipaddress.ip_address(value) if net.version == 6 else ipaddress.IPv4Address(value)
            )
            for candidate in [address, *embedded_ipv4(address)]:
                kind = AddressPolicy().refusal(candidate) or ""
                assert not any(word in kind for word in never), (net, candidate, kind)


@pytest.mark.parametrize(
    ("listen", "index"),
    [
        pytest.param('allow = ["0.0.0.0/0"]', 0, id="everything"),
        pytest.param('allow = ["192.168.1.0/24", "0.0.0.0/1", "128.0.0.0/1"]', 1, id="halves"),
        pytest.param('allow = ["::/0"]', 0, id="ipv6-everything"),
        pytest.param('allow = ["2000::/3"]', 0, id="ipv6-global-unicast"),
        pytest.param('allow = ["64:ff9b::/96"]', 0, id="nat64-of-everything"),
        pytest.param('allow = ["8.0.0.0/6"]', 0, id="wider-than-a-slash-8"),
    ],
)
def test_an_allow_list_open_to_the_internet_is_refused_without_passwords(
    listen: str, index: int
) -> None:
    found = problems(f'[listen]\nmixed = "0.0.0.0:1080"\n{listen}\n')
    assert any(p.startswith(f"listen.allow[{index}]: ") and "open proxy" in p for p in found), found
    with_users = f'{listen}\nusers = [{{ name = "a", password = "b" }}]'
    assert config(f'[listen]\nmixed = "0.0.0.0:1080"\n{with_users}\n').listen.allow


@pytest.mark.parametrize(
    "allow",
    [
        '["192.168.0.0/16", "10.0.0.0/8"]',
        '["17.0.0.0/8"]',
        '["fd00::/8", "2001:db8::/32"]',
        '["100.64.0.0/10"]',
    ],
)
def test_allow_lists_of_networks_pass(allow: str) -> None:
    assert config(f'[listen]\nmixed = "0.0.0.0:1080"\nallow = {allow}\n').listen.allow


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent is Linux-only")
def test_a_wide_allow_list_is_refused_for_the_transparent_listener_even_with_users() -> None:
    found = problems(
        '[listen]\ntransparent = "0.0.0.0:1090"\nallow = ["0.0.0.0/0"]\n'
        'users = [{ name = "a", password = "b" }]\n'
    )
    assert any(p.startswith("listen.allow[0]: ") and "listen.transparent" in p for p in found)


def test_a_wide_allow_list_is_refused_for_the_whatsapp_proxy_even_with_users() -> None:
    found = problems(
        '[listen]\nallow = ["::/0"]\nusers = [{ name = "a", password = "b" }]\n'
        '[whatsapp_proxy]\nlisten = "0.0.0.0"\n'
    )
    assert any(p.startswith("listen.allow[0]: ") and "whatsapp_proxy" in p for p in found), found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TPROXY is Linux-only")
def test_transparent_udp_off_loopback_needs_an_allow_list() -> None:
    found = problems('[listen]\ntransparent_udp = "0.0.0.0:1091"\n')
    assert any(p.startswith("listen.transparent_udp:") and "listen.allow" in p for p in found)
    ok = config('[listen]\ntransparent_udp = "0.0.0.0:1091"\nallow = ["192.168.1.0/24"]\n')
    assert ok.listen.transparent_udp == Endpoint("0.0.0.0", 1091)
    assert config("").listen.transparent_udp is None
