"""Links as route layers (transports/links.py): the public examples of each format parse,
round-trip, and print without their secrets; bad links get one line naming the problem."""

from __future__ import annotations

import base64
import json

import pytest

from transports import parse_chain, redact
from transports.links import LinkError, link_text, parse_link

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PBK = "Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrjqnAw"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def vmess(document: dict) -> str:
    return "vmess://" + base64.b64encode(json.dumps(document).encode()).decode()


# (link, layer name, what the parsed layer shows, the secret that must not show)
EXAMPLES = [
    # SIP002's own examples
    (
        "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1",
        "ss",
        "ss://aes-128-gcm:***@192.168.100.1:8888",
        "dGVzdA",
    ),
    (
        "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2B0tx%2FtRizJN9K8y%2BuKlW2qjlI%3D"
        "@192.168.100.1:8888#Example3",
        "ss",
        "ss://2022-blake3-aes-256-gcm:***@192.168.100.1:8888",
        "YctPZ6U7xPPcU",
    ),
    # SIP022's URL document
    (
        "ss://2022-blake3-aes-128-gcm:5mOQSa20Kt6ay2LXruBoHQ%3D%3D@example.com:443/#name",
        "ss",
        "ss://2022-blake3-aes-128-gcm:***@example.com:443",
        "5mOQSa20Kt6ay2LXruBoHQ",
    ),
    (
        "ss://2022-blake3-aes-256-gcm:t7XRzLCvgsH4r4r669cyqPnVNFG2c%2FHC5Tt%2BMjINJB0%3D"
        "@[2001:db8:1f74:3c86:aef9:a75:5d2a:425e]:20220/#name",
        "ss",
        "ss://2022-blake3-aes-256-gcm:***@[2001:db8:1f74:3c86:aef9:a75:5d2a:425e]:20220",
        "t7XRzLCvgsH4r4r669cyqPnVNFG2c",
    ),
    # the legacy all-base64 form
    (
        "ss://" + b64("aes-256-gcm:legacy-pw@192.0.2.7:8388") + "#old",
        "ss",
        "ss://aes-256-gcm:***@192.0.2.7:8388",
        "legacy-pw",
    ),
    # Outline static keys, with the prefix disguise (a TLS record header)
    (
        "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpvdXRsaW5lLXNlY3JldA@203.0.113.5:40123/?outline=1",
        "ss",
        "ss://chacha20-ietf-poly1305:***@203.0.113.5:40123",
        "outline-secret",
    ),
    (
        "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpvdXRsaW5lLXNlY3JldA@203.0.113.5:443"
        "/?outline=1&prefix=%16%03%01%00%C2%A8%01%01#With%20prefix",
        "ss",
        "ss://chacha20-ietf-poly1305:***@203.0.113.5:443/?prefix=%16%03%01%00%C2%A8%01%01",
        "outline-secret",
    ),
    (
        "ssconf://keys.example.com/outline/4f6a2d.json#My%20key",
        "ssconf",
        "ssconf://keys.example.com/***",
        "4f6a2d",
    ),
    # the Xray share-link form
    (
        f"vless://{UUID}@example.com:443?type=ws&security=tls&path=%2Fwebsocket"
        "&host=example.com&sni=example.com#remark",
        "vless",
        "vless://***@example.com:443?type=ws&security=tls&sni=example.com&host=example.com"
        "&path=%2Fwebsocket",
        UUID,
    ),
    (
        f"vless://{UUID}@198.51.100.9:443?security=reality&encryption=none&pbk={PBK}"
        "&fp=chrome&type=tcp&flow=xtls-rprx-vision&sni=www.microsoft.com&sid=6ba85179e30d4fc2"
        "&spx=%2F#reality",
        "vless",
        f"vless://***@198.51.100.9:443?type=tcp&security=reality&flow=xtls-rprx-vision"
        f"&sni=www.microsoft.com&fp=chrome&pbk={PBK}&spx=%2F&sid=***",
        "6ba85179e30d4fc2",
    ),
    (
        f"vless://{UUID}@example.com:443?type=grpc&serviceName=tun&security=tls&sni=example.com",
        "vless",
        "vless://***@example.com:443?type=grpc&security=tls&sni=example.com&serviceName=tun",
        UUID,
    ),
    (
        f"vless://{UUID}@example.com:443?type=xhttp&path=%2Fx&mode=packet-up&security=tls",
        "vless",
        "vless://***@example.com:443?type=xhttp&security=tls&path=%2Fx&mode=packet-up",
        UUID,
    ),
    # v2rayN's vmess form
    (
        vmess(
            {
                "v": "2",
                "ps": "vm",
                "add": "example.com",
                "port": "443",
                "id": UUID,
                "aid": "0",
                "scy": "auto",
                "net": "ws",
                "type": "none",
                "host": "cdn.example",
                "path": "/vm",
                "tls": "tls",
                "sni": "cdn.example",
            }
        ),
        "vmess",
        "vmess://***@example.com:443?type=ws&security=tls&sni=cdn.example&host=cdn.example"
        "&path=%2Fvm",
        UUID,
    ),
    (
        f"vmess://{UUID}@example.com:8443?type=tcp&security=none#url-form",
        "vmess",
        "vmess://***@example.com:8443?type=tcp&security=none",
        UUID,
    ),
    (
        "trojan://p%40ss%20word@remote-host.example:443?security=tls&type=tcp"
        "&sni=remote-host.example#trojan",
        "trojan",
        "trojan://***@remote-host.example:443?type=tcp&security=tls&sni=remote-host.example",
        "p@ss word",
    ),
]


@pytest.mark.parametrize(("link", "name", "shown", "secret"), EXAMPLES)
def test_public_examples_parse_show_and_round_trip(
    link: str, name: str, shown: str, secret: str
) -> None:
    layer = parse_link(link)
    assert layer.name == name
    assert str(layer) == shown
    assert secret not in str(layer) and secret not in repr(layer)
    assert secret not in redact(link)
    assert secret not in repr(layer.params)
    again = parse_link(link_text(layer))
    assert again.params == layer.params
    assert link_text(again) == link_text(layer)
    # the same link is a chain layer too
    chain = parse_chain(f"{link}")
    assert chain.layers[-1].params == layer.params
    assert secret not in str(chain)


def test_what_the_links_carry() -> None:
    server = parse_link(EXAMPLES[6][0]).params["server"]
    assert server.prefix == b"\x16\x03\x01\x00\xa8\x01\x01"
    assert server.password == "outline-secret" and server.name == "With prefix"
    reality = parse_link(EXAMPLES[9][0]).params["link"]
    assert (reality.public_key, reality.short_id, reality.flow) == (
        PBK,
        "6ba85179e30d4fc2",
        "xtls-rprx-vision",
    )
    key = parse_link(EXAMPLES[7][0]).params["key"]
    assert key.url == "https://keys.example.com/outline/4f6a2d.json" and key.name == "My key"
    trojan = parse_link(EXAMPLES[-1][0]).params["link"]
    assert trojan.secret == "p@ss word"


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("ss://!!!notbase64@example.com:8388", "ss: the user info is not base64"),
        ("ss://" + b64("aes-256-gcm:pw") + "@example.com", "ss: the port is missing"),
        ("ss://" + b64("aes-256-gcm:pw") + "@example.com:0", "port must be a number 1-65535"),
        ("ss://" + b64("aes-999-gcm:pw") + "@example.com:1", "unknown cipher 'aes-999-gcm'"),
        ("ss://" + b64("rc4-md5:pw") + "@example.com:1", "stream cipher"),
        ("ss://" + b64("aes-256-gcm") + "@example.com:1", "not METHOD:PASSWORD"),
        (
            "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888/?plugin=obfs-local%3Bobfs%3Dhttp",
            "the plugin 'obfs-local' is not supported",
        ),
        ("ss://2022-blake3-aes-128-gcm:c2hvcnQ=@example.com:1", "needs 16"),
        ("ss://example.com:1", "not base64"),
        ("ssconf://", "names no host"),
        ("ssconf://user@keys.example.com/x", "must not hold a user name"),
        ("vless://not-a-uuid@example.com:443", "vless: the user id is not a UUID"),
        (f"vless://{UUID}@example.com", "vless: the port is missing"),
        (f"vless://{UUID}@example.com:443?type=kcp", "type=kcp is not supported"),
        (f"vless://{UUID}@example.com:443?security=reality&sni=a.b", "public key (pbk="),
        (f"vless://{UUID}@example.com:443?flow=xtls-rprx-vision", "needs type=tcp with tls"),
        (f"vless://{UUID}@example.com:443?fp=netscape", "not a known fingerprint"),
        ("vmess://bm90IGpzb24", "vmess: the link is not base64 of a JSON object"),
        ("vmess://@@@", "vmess: the server address is missing"),
        ("trojan://@example.com:443", "trojan: the password before '@' is missing"),
        ("trojan://pw@example.com:443?security=none", "needs TLS"),
        ("http://example.com", "not a link detour reads"),
        ("vless://" + "a" * 9000, "longer than 8192"),
    ],
)
def test_bad_links_get_one_line_naming_the_problem(link: str, message: str) -> None:
    with pytest.raises(LinkError) as caught:
        parse_link(link)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "pw" not in text.replace("password", "")


def test_errors_never_quote_the_secret() -> None:
    for link in (
        "ss://" + b64("aes-256-gcm:TOPSECRET") + "@example.com:99999",
        "ss://2022-blake3-aes-128-gcm:TOPSECRET@example.com:1",
        "trojan://TOPSECRET@example.com:443?security=none",
        "vless://TOPSECRET@example.com:443",
    ):
        with pytest.raises(LinkError) as caught:
            parse_link(link)
        assert "TOPSECRET" not in str(caught.value)


def test_link_layers_take_names_and_need_direct_before_a_core() -> None:
    chain = parse_chain("socks5://127.0.0.1:9050 | " + EXAMPLES[0][0])
    assert not chain.resolves_locally
    with pytest.raises(ValueError, match="only direct can come before a vless layer"):
        parse_chain(f"socks5://127.0.0.1:9050 | vless://{UUID}@example.com:443")
    assert parse_chain(f"vless://{UUID}@example.com:443 | tlsfrag:sni").layers[1].name == "vless"


def test_link_text_of_other_layers_is_refused() -> None:
    with pytest.raises(LinkError, match="not a link"):
        link_text(parse_chain("direct").layers[0])


# --- logins holding '@', '/', '?', '#' unescaped: read as RFC 3986 reads them -------------


def test_a_password_with_an_at_reads_to_the_last_at_everywhere() -> None:
    from helper.subscriptions.formats import parse_list
    from transports.links import recognise_link

    text = "socks5://alice:p@ss@10.0.0.1:1080"
    for chain in (
        text,
        recognise_link(text).chain,
        parse_list((text + "\n").encode(), allow_private=True).nodes[0].chain,
    ):
        params = parse_chain(chain).layers[-1].params
        assert (params["username"], params["password"]) == ("alice", "p@ss")
        assert params["proxy"] == parse_chain("socks5://10.0.0.1:1080").layers[-1].params["proxy"]


@pytest.mark.parametrize(
    "text",
    [
        # RFC 3986 reads host "alice", port 12, no login, and a name "Zq9@10.0.0.1:1080": the
        # '#' of a password, not a proxy at alice:12 named after the rest of the password
        "socks5://alice:12#Zq9@10.0.0.1:1080",
        "socks5://alice:p@Zq9#word@10.0.0.1:1080",
        "http://alice:12/Zq9@10.0.0.1:3128",  # (not "a URL with a path is a subscription")
        "socks5://alice:12?Zq9@10.0.0.1:1080",
        "trojan://p#Zq9@10.0.0.1:443",
        "trojan://p@s/Zq9@10.0.0.1:443",
    ],
)
def test_a_login_cut_at_a_slash_query_or_hash_is_refused_with_percent_encoding(text) -> None:
    from transports.links import recognise_link

    with pytest.raises(LinkError, match="percent-encode") as err:
        recognise_link(text)
    assert "Zq9" not in str(err.value)


def test_an_at_in_a_query_is_not_the_end_of_the_userinfo() -> None:
    """`path=/ws@x` in a query: the userinfo is the authority's (it read to the last '@' of
    the whole link, and the link had "no port")."""
    layer = parse_link("trojan://secret@10.0.0.1:443?type=ws&path=/ws@x#name")
    link = layer.params["link"]
    assert (link.address.host, link.address.port, link.name) == ("10.0.0.1", 443, "name")
    # a password with '/' unescaped (standard base64) and nothing else to read: still read
    layer = parse_link("trojan://p/ss@10.0.0.1:443")
    assert layer.params["link"].address.host == "10.0.0.1"


def test_a_telegram_socks_link_server_is_a_host_only() -> None:
    from transports.links import recognise_link

    for server in ("alice%3Apw%4010.0.0.1", "a%4010.0.0.1", "10.0.0.1%2Fx", "a%7Cb"):
        with pytest.raises(LinkError, match="server= is not a host name or address"):
            recognise_link(f"tg://socks?server={server}&port=1080")
