"""An Outline config's `udp` part (transports/shadowsocks/outline.py, read_outline_config):
UDP to the server it names, to the TCP server when there is none, and a part detour cannot
use refuses UDP with the reason while TCP keeps working."""

from __future__ import annotations

import pytest

from transports.links import parse_link
from transports.shadowsocks import OutlineKeyError
from transports.shadowsocks.outline import read_outline_config


def _parse_ss(text: str):
    return parse_link(text).params["server"]


def _config(udp: str) -> bytes:
    return (
        "transport:\n  $type: tcpudp\n  tcp:\n    $type: shadowsocks\n"
        "    endpoint: tcp.example:8388\n    cipher: chacha20-ietf-poly1305\n"
        '    secret: tcp-secret\n    prefix: "POST "\n' + udp
    ).encode()


def test_the_udp_part_names_its_own_server() -> None:
    config = read_outline_config(
        _config(
            "  udp:\n    $type: shadowsocks\n    endpoint: udp.example:9000\n"
            "    cipher: aes-256-gcm\n    secret: udp-secret\n"
        ),
        _parse_ss,
    )
    assert str(config.tcp.address) == "tcp.example:8388" and config.tcp.prefix == b"POST "
    assert str(config.udp_server.address) == "udp.example:9000"
    assert config.udp_server.key.method.name == "aes-256-gcm"


def test_without_a_udp_part_udp_goes_to_the_tcp_server() -> None:
    config = read_outline_config(_config(""), _parse_ss)
    assert config.udp is None and config.udp_server == config.tcp
    link = read_outline_config(b"ss://YWVzLTEyOC1nY206cHc@h.example:8388#x", _parse_ss)
    assert link.udp_server == link.tcp


def test_a_shared_anchor_with_the_tcp_prefix_is_read_without_it() -> None:
    body = (
        b"transport:\n  $type: tcpudp\n  tcp: &shared\n    $type: shadowsocks\n"
        b"    endpoint: s.example:4321\n    cipher: chacha20-ietf-poly1305\n"
        b'    secret: pw\n    prefix: "POST "\n  udp: *shared\n'
    )
    config = read_outline_config(body, _parse_ss)
    assert config.tcp.prefix == b"POST " and config.udp_server.prefix == b""
    assert config.udp_server.address == config.tcp.address


def test_first_supported_options_for_udp() -> None:
    config = read_outline_config(
        _config(
            "  udp:\n    $type: first-supported\n    options:\n"
            "      - {$type: websocket-packet, url: wss://cdn.example/udp}\n"
            "      - {$type: shadowsocks, endpoint: u.example:1, cipher: aes-128-gcm, "
            "secret: s}\n"
        ),
        _parse_ss,
    )
    assert str(config.udp_server.address) == "u.example:1"


@pytest.mark.parametrize(
    ("udp", "reason"),
    [
        ("  udp:\n    $type: websocket\n", r"transport.udp: \$type 'websocket' is not supported"),
        (
            "  udp:\n    $type: shadowsocks\n    endpoint: u.example:1\n    cipher: rc4\n"
            "    secret: s\n",
            "transport.udp",
        ),
        ("  udp: 7\n", "transport.udp: no UDP packet listener is given"),
    ],
)
def test_a_udp_part_detour_cannot_use_leaves_tcp_and_refuses_udp(udp: str, reason: str) -> None:
    config = read_outline_config(_config(udp), _parse_ss)
    assert str(config.tcp.address) == "tcp.example:8388"
    with pytest.raises(OutlineKeyError, match=reason) as caught:
        config.udp_server  # noqa: B018
    assert "secret" not in str(caught.value)


def test_first_supported_options_keep_the_tcp_prefix_and_drop_the_udp_one() -> None:
    """The tcp and udp parts are read by one function (outline.py, _shadowsocks): an
    option chosen among first-supported ones still keeps its prefix for TCP only."""
    option = (
        "    $type: first-supported\n    options:\n      - {$type: shadowsocks, "
        'endpoint: o.example:2, cipher: aes-128-gcm, secret: s, prefix: "GET "}\n'
    )
    body = ("transport:\n  $type: tcpudp\n  tcp:\n" + option + "  udp:\n" + option).encode()
    config = read_outline_config(body, _parse_ss)
    assert config.tcp.prefix == b"GET " and config.udp_server.prefix == b""
    assert str(config.tcp.address) == str(config.udp_server.address) == "o.example:2"
    with pytest.raises(OutlineKeyError, match=r"transport\.tcp: no TCP dialer is given"):
        read_outline_config(b"transport:\n  $type: tcpudp\n  tcp: 5\n", _parse_ss)
