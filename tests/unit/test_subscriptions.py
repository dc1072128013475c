"""Subscription lists (helper/subscriptions/formats.py) in each format, the nodes refused
and why, and the pool put into a config (helper/config/subscription.py): names stable
across refreshes, overrides kept, services that use it, a pool applied twice the same."""

from __future__ import annotations

import base64
import json

import pytest

from helper.config import ConfigError
from helper.config.file import parse_toml
from helper.config.load import layer_data
from helper.config.subscription import hide_url, with_pools
from helper.subscriptions.formats import SubscriptionError, parse_list

from .test_links import EXAMPLES

LINKS = [link for link, *_ in EXAMPLES]


def config(extra: str = ""):
    text = f"""
[[subscription]]
name = "panel"
url = "https://panel.example/api/sub/TOPSECRET"
services = ["telegram"]
{extra}
[[service]]
name = "mine"
domains = ["mine.example"]
routes = ["direct", "panel"]
"""
    return layer_data(parse_toml(text, "t.toml"), "t.toml").config


def test_base64_and_plain_lines_of_every_public_example() -> None:
    body = "\n".join(["# a comment", *LINKS, ""]).encode()
    plain = parse_list(body, allow_private=True)
    encoded = parse_list(base64.b64encode(body), allow_private=True)
    urlsafe = parse_list(base64.urlsafe_b64encode(body).rstrip(b"="), allow_private=True)
    assert (plain.format, encoded.format, urlsafe.format) == ("lines", "base64", "base64")
    assert plain.nodes == encoded.nodes == urlsafe.nodes
    assert len(plain.nodes) == len(LINKS) and not plain.refused
    assert len({n.slug for n in plain.nodes}) == len(plain.nodes)  # names made distinct


def test_sip008_and_outline_json() -> None:
    sip008 = {
        "version": 1,
        "servers": [
            {
                "id": "27b8a625-4f4b-4428-9f0f-8a2317db7c79",
                "remarks": "Name of the server",
                "server": "example.com",
                "server_port": 8388,
                "password": "example",
                "method": "chacha20-ietf-poly1305",
                "plugin": "",
            },
            {"server": "example.org", "server_port": 8388, "password": "x",
             "method": "aes-256-gcm", "plugin": "obfs-local"},
        ],
    }  # fmt: skip
    parsed = parse_list(json.dumps(sip008).encode())
    assert parsed.format == "sip008"
    assert [n.slug for n in parsed.nodes] == ["Name-of-the-server"]
    assert parsed.nodes[0].shown.endswith("ss://chacha20-ietf-poly1305:***@example.com:8388")
    assert parsed.refused == ("server 1: ss: the plugin 'obfs-local' is not supported "
                              "(detour speaks plain Shadowsocks; run the plugin's client "
                              "yourself and chain through it)",)  # fmt: skip
    outline = {"server": "203.0.113.4", "server_port": 443, "password": "pw",
               "method": "chacha20-ietf-poly1305", "prefix": "\u0016\u0003\u0001"}  # fmt: skip
    parsed = parse_list(json.dumps(outline).encode())
    assert parsed.format == "outline" and parsed.nodes[0].kind == "ss"
    assert "prefix=" in parsed.nodes[0].chain


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the list is empty"),
        (b"\xff\xfe", "not text"),
        (b"%%%", "none of the formats"),
        (b"YWJj!", "none of the formats"),
        (b"{", "not valid JSON"),
        (b"[]", "none of the formats"),
        (b'{"a": 1}', "neither 'servers'"),
        (b"hello://x\n", "holds no node"),
        (b"socks5://10.1.2.3:1080\n", "is private, loopback or link-local"),
        (b"socks5://[fe80::1]:1080\n", "is private"),
        (b"socks5://localhost:1080\n", "is private"),
        (b"tg://proxy?server=a&port=1&secret=dd\n", "is no proxy secret"),
        (b"https://other.example/list\n", "not a server"),
        (b"x" * (4 * 1024 * 1024 + 1), "the list is too large (more than 4096 KiB"),
    ],
)
def test_what_is_not_a_list_says_why_in_one_line(body: bytes, message: str) -> None:
    with pytest.raises(SubscriptionError) as caught:
        parse_list(body)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_some_lines_refused_the_rest_kept() -> None:
    body = b"ss://bad\nsocks5://198.51.100.7:1080#ok\nsocks5://127.0.0.1:1#local\n"
    parsed = parse_list(body)
    assert [n.slug for n in parsed.nodes] == ["ok"]
    assert [r.split(":")[0] for r in parsed.refused] == ["line 1", "line 3"]
    assert [n.slug for n in parse_list(body, allow_private=True).nodes] == ["ok", "local"]


def test_the_pool_in_a_config() -> None:
    nodes = parse_list(b"socks5://198.51.100.1:1#A\nsocks5://198.51.100.2:1#B\n").nodes
    base = config('nodes = { "B" = { timeout = "3s" } }')
    pooled = with_pools(base, {"panel": nodes})
    assert [r.name for r in pooled.routes][-2:] == ["panel.A", "panel.B"]
    assert pooled.route("panel.B").timeout == 3.0
    services = {s.name: s.routes for s in pooled.services}
    assert services["mine"] == ("direct", "panel.A", "panel.B")  # named in its routes
    assert services["telegram"][:2] == ("panel.A", "panel.B")  # `services` puts it first
    assert "panel.A" not in services["whatsapp"]  # every other service: not used
    # A refresh with another list: applied to the pooled config, the same as from scratch.
    fewer = with_pools(pooled, {"panel": nodes[1:]})
    assert fewer == with_pools(base, {"panel": nodes[1:]})
    assert "panel.A" not in [r.name for r in fewer.routes]
    # No list yet: no pool, and the services keep their own routes.
    empty = with_pools(base, {})
    assert not [r for r in empty.routes if r.name.startswith("panel.")]
    # A disabled node stays out, whatever the list says.
    off = with_pools(config('nodes = { "A" = { enabled = false } }'), {"panel": nodes})
    assert [r.name for r in off.routes if r.name.startswith("panel.")] == ["panel.B"]


def test_the_url_is_a_secret() -> None:
    loaded = config()
    assert "TOPSECRET" not in repr(loaded)
    assert hide_url(loaded.subscriptions[0].url) == "https://panel.example/***"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[subscription]]\nname = "x"\nurl = "http://a.example/s"\n', "fetched over https://"),
        ('[[subscription]]\nname = "x"\nurl = "https://a.example/s"\nservices = ["nope"]\n',
         "no service named 'nope'"),
        ('[[subscription]]\nname = "x"\nurl = "https://a.example/s"\nvia = ["nope"]\n',
         "no route named 'nope'"),
        ('[[subscription]]\nname = "direct"\nurl = "https://a.example/s"\n', "is a route"),
        ('[[subscription]]\nname = "x"\nurl = "https://a.example/s"\nnodes = { a = 1 }\n',
         "expected a table"),
        ('[[subscription]]\nname = "x"\nurl = "https://a.example/s"\n'
         'nodes = { a = { colour = 1 } }\n', "unknown key 'colour'"),
        ('[[subscription]]\nname = "x"\nurl = "https://a.example/s"\nstandby_probe = "soon"\n',
         "standby_probe"),
    ],
)  # fmt: skip
def test_config_problems_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        layer_data(parse_toml(extra, "t.toml"), "t.toml")
    assert message in str(caught.value)
