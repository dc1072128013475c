"""The [listen] keys of router mode: transparent, remote_default, remote_public, limits, and
the exposure rule for the transparent listener."""

from __future__ import annotations

import ipaddress
import sys

import pytest

from tests.unit.test_config import config, problems
from transports import Endpoint


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
        ('remote_public = ["169.254.0.0/16"]', "remote clients never reach link-local"),
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
