"""Clash YAML and sing-box JSON lists (helper/subscriptions/clash.py, through
formats.parse_list), and the HTTP answer a list comes in (fetch.read_answer), take
anything: arbitrary bytes, YAML that is not Clash, proxies with any values of any type.
Each is nodes (distinct names, chains that parse, shown without the secret) or one line
saying why not, never a traceback."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from helper.config.values import entry_name
from helper.subscriptions.fetch import read_answer
from helper.subscriptions.formats import SubscriptionError, parse_list
from transports import DialError, parse_chain

SECRET = "Zq9secret"
KINDS = ("ss", "vmess", "vless", "trojan", "socks5", "http", "shadowsocks", "socks", "x", "")
KEYS = (
    "server", "port", "server_port", "cipher", "method", "password", "uuid", "network",
    "tls", "servername", "sni", "ws-opts", "grpc-opts", "h2-opts", "reality-opts",
    "transport", "alterId", "alter_id", "username", "plugin", "flow", "alpn", "version",
)  # fmt: skip
VALUES = (
    "192.0.2.1", "example.com", "[::1]", "443", 443, 0, 70000, -1, True, None, [], {},
    "aes-256-gcm", "chacha20-ietf-poly1305", "ws", "grpc", "h2", "http", "tcp", "kcp",
    ["h2", "http/1.1"], {"path": "/p", "headers": {"Host": "h"}}, {"enabled": True},
    {"type": "ws", "path": "/x"}, {"public-key": "k", "short-id": "1"}, "a b", "\n", "%",
)  # fmt: skip


def _proxy(data: bytes) -> dict:
    proxy: dict = {"name": data[:6].decode("utf-8", "replace"), "password": SECRET}
    proxy["type"] = KINDS[data[0] % len(KINDS)] if data else ""
    for i in range(1, len(data) - 1, 2):
        proxy[KEYS[data[i] % len(KEYS)]] = VALUES[data[i + 1] % len(VALUES)]
    return proxy


def _document(data: bytes) -> bytes:
    """One binary draw as a list: raw bytes, Clash YAML (as JSON, which is YAML, or as
    text around the bytes), or sing-box JSON, of proxies built from the bytes."""
    if not data:
        return b""
    form, rest = data[0] % 4, data[1:]
    proxies = [_proxy(rest[i : i + 12]) for i in range(0, len(rest), 12)]
    if form == 0:
        return b"proxies:\n" + rest
    if form == 1:
        return b"proxies: " + json.dumps(proxies).encode()
    if form == 2:
        for proxy in proxies:
            proxy["tag"] = proxy.pop("name")
        return json.dumps({"outbounds": proxies}).encode()
    return b"port: 1\nproxies:\n" + b"".join(
        b"  - " + json.dumps(p).encode() + b"\n" for p in proxies
    )


@settings(max_examples=max(20, settings.default.max_examples // 5))
@given(st.binary(max_size=200).map(_document))
@example(b"proxies:\n  - &a {type: socks5, server: 192.0.2.1, port: 1}\n  - *a\n  - *a\n")
@example(b"proxies: [" * 200)
@example(b'proxies:\n  - {type: trojan, server: "192.0.2.1", port: 99999999999999999999}\n')
@example(b'{"outbounds": [{"type": "socks", "server": "h", "server_port": 1, "version": "9"}]}')
def test_any_clash_or_singbox_list_is_nodes_or_one_line_error(body: bytes) -> None:
    try:
        parsed = parse_list(body, allow_private=True)
    except SubscriptionError as exc:
        message = str(exc)
        assert message and "\n" not in message and SECRET not in message
        return
    assert parsed.nodes
    assert len({n.slug.lower() for n in parsed.nodes}) == len(parsed.nodes)
    for node in parsed.nodes:
        parse_chain(node.chain)
        entry_name(f"pool.{node.slug}"[:64])
        assert SECRET not in node.shown and SECRET not in repr(node)
    for reason in parsed.refused:
        assert "\n" not in reason and SECRET not in reason


@given(st.binary(max_size=200))
def test_any_answer_is_read_or_refused_in_one_line(data: bytes) -> None:
    try:
        status, _, body = read_answer(b"HTTP/1.1 200 OK\r\n" + data, limit=64)
    except (SubscriptionError, DialError) as exc:
        message = str(exc)
    else:
        assert status == 200 and len(body) <= 64
        return
    assert message and "\n" not in message
