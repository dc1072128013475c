"""Clash (Clash.Meta) YAML and sing-box JSON lists (helper/subscriptions/clash.py): each
proxy kind detour can use becomes the link detour reads (so it is checked as one), each it
cannot is refused with its position and the reason, never its secret."""

from __future__ import annotations

import json

import pytest

from helper.subscriptions.formats import SubscriptionError, parse_list
from transports import parse_chain

CLASH = """\
port: 7890
mode: rule
proxies:
  - name: "SS Frankfurt"
    type: ss
    server: 203.0.113.10
    port: 8388
    cipher: aes-256-gcm
    password: "SECRETss"
  - {name: vmess-ws, type: vmess, server: vm.example.com, port: 443,
     uuid: 3b5e2f4c-8a1d-4e6f-9b2a-7c8d9e0f1a2b, alterId: 0, cipher: auto, tls: true,
     servername: vm.example.com, network: ws,
     ws-opts: {path: /ray, headers: {Host: vm.example.com}}}
  - name: vless-reality
    type: vless
    server: 198.51.100.7
    port: 443
    uuid: 9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a
    network: tcp
    tls: true
    flow: xtls-rprx-vision
    servername: www.example.org
    client-fingerprint: chrome
    reality-opts:
      public-key: Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw
      short-id: 6ba85179e30d4fc2
  - name: trojan-grpc
    type: trojan
    server: tr.example.net
    port: 443
    password: SECRETtrojan
    sni: tr.example.net
    network: grpc
    grpc-opts: {grpc-service-name: svc}
  - {name: sock, type: socks5, server: 192.0.2.8, port: 1080, username: u, password: SECRETsocks}
  - {name: web, type: http, server: 192.0.2.9, port: 3128}
  - {name: hy, type: hysteria2, server: 192.0.2.10, port: 443, password: SECREThy}
  - {name: obfs, type: ss, server: 192.0.2.11, port: 1, cipher: aes-256-gcm, password: x,
     plugin: obfs}
  - {name: noport, type: trojan, server: 192.0.2.12, password: SECRETnoport}
proxy-groups:
  - {name: auto, type: url-test, proxies: [vmess-ws]}
"""


def test_clash_proxies_become_the_links_detour_reads() -> None:
    parsed = parse_list(CLASH.encode())
    assert parsed.format == "clash"
    by_slug = {n.slug: n for n in parsed.nodes}
    assert list(by_slug) == [
        "SS-Frankfurt", "vmess-ws", "vless-reality", "trojan-grpc", "sock", "web",
    ]  # fmt: skip
    assert [n.kind for n in parsed.nodes] == ["ss", "vmess", "vless", "trojan", "socks5", "http"]
    vless = parse_chain(by_slug["vless-reality"].chain).layers[-1].params["link"]
    assert (vless.security, vless.flow, vless.fingerprint) == (
        "reality",
        "xtls-rprx-vision",
        "chrome",
    )
    assert vless.short_id == "6ba85179e30d4fc2" and vless.sni == "www.example.org"
    vmess = parse_chain(by_slug["vmess-ws"].chain).layers[-1].params["link"]
    assert (vmess.network, vmess.path, vmess.host, vmess.security) == (
        "ws", "/ray", "vm.example.com", "tls",
    )  # fmt: skip
    trojan = parse_chain(by_slug["trojan-grpc"].chain).layers[-1].params["link"]
    assert (trojan.network, trojan.service_name) == ("grpc", "svc")
    assert len(parsed.refused) == 3
    assert "type 'hysteria2' is not one detour can use" in parsed.refused[0]
    assert "plugin 'obfs'" in parsed.refused[1]
    assert "port is missing" in parsed.refused[2]
    for text in (*parsed.refused, *(n.shown for n in parsed.nodes), repr(parsed)):
        assert "SECRET" not in text


SINGBOX = {
    "log": {"level": "info"},
    "outbounds": [
        {"type": "selector", "tag": "proxy", "outbounds": ["a"]},
        {
            "type": "shadowsocks", "tag": "a", "server": "203.0.113.20", "server_port": 8388,
            "method": "2022-blake3-aes-128-gcm", "password": "AAAAAAAAAAAAAAAAAAAAAA==",
        },
        {
            "type": "vless", "tag": "b", "server": "198.51.100.9", "server_port": 443,
            "uuid": "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
            "tls": {"enabled": True, "server_name": "cdn.example.org",
                    "utls": {"enabled": True, "fingerprint": "firefox"}},
            "transport": {"type": "ws", "path": "/v", "headers": {"Host": "cdn.example.org"}},
        },
        {"type": "trojan", "tag": "c", "server": "tr.example.net", "server_port": 443,
         "password": "SECRETt", "tls": {"enabled": True}},
        {"type": "vmess", "tag": "d", "server": "vm.example.com", "server_port": 80,
         "uuid": "3b5e2f4c-8a1d-4e6f-9b2a-7c8d9e0f1a2b", "security": "auto"},
        {"type": "socks", "tag": "e", "server": "192.0.2.8", "server_port": 1080},
        {"type": "wireguard", "tag": "f", "server": "192.0.2.9", "server_port": 51820},
        {"type": "direct", "tag": "direct"},
    ],
}  # fmt: skip


def test_singbox_outbounds_become_the_links_detour_reads() -> None:
    parsed = parse_list(json.dumps(SINGBOX).encode())
    assert parsed.format == "sing-box"
    assert [(n.slug, n.kind) for n in parsed.nodes] == [
        ("a", "ss"), ("b", "vless"), ("c", "trojan"), ("d", "vmess"), ("e", "socks5"),
    ]  # fmt: skip
    vless = parse_chain(parsed.nodes[1].chain).layers[-1].params["link"]
    assert (vless.network, vless.path, vless.fingerprint, vless.security) == (
        "ws", "/v", "firefox", "tls",
    )  # fmt: skip
    assert parsed.refused == ("outbound 6: type 'wireguard' is not one detour can use",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"proxies: [\n", "not valid YAML"),
        (b"proxies: 3\n", "'proxies' is not a list"),
        (b"proxies:\n  - 1\n", "holds no node"),
        (b'{"outbounds": {}}', "'outbounds' is not a list"),
        (b'{"outbounds": [{"type": "direct"}]}', "holds no node"),
        (b"proxies: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_what_is_not_a_list_says_why(body: bytes, message: str) -> None:
    with pytest.raises(SubscriptionError) as caught:
        parse_list(body)
    assert message in str(caught.value)


def test_private_nodes_in_clash_lists_are_refused() -> None:
    body = b"proxies:\n  - {name: lan, type: socks5, server: 192.168.1.1, port: 1080}\n"
    with pytest.raises(SubscriptionError) as caught:
        parse_list(body)
    assert "private" in str(caught.value)
    assert parse_list(body, allow_private=True).nodes[0].slug == "lan"
