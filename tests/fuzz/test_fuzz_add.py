"""The link recogniser under `detour add` (transports/links.recognise_link) and the reader of
subscription lists (helper/subscriptions/formats.parse_list) take anything. Every pasted text
is either recognised (and then its chain parses, and what is shown does not quote the
secret) or refused with one line, never a traceback; a list is nodes with distinct names
that are chains, or one line saying why not.

A recognised link's chain reads back as a chain; a recognised link is shown without the
password it was given."""

from __future__ import annotations

import base64
import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from helper.config.values import entry_name
from helper.subscriptions.formats import SubscriptionError, parse_list
from transports import parse_chain
from transports.links import LinkError, recognise_link

SCHEMES = (
    "ss", "ssconf", "vless", "vmess", "trojan", "socks5", "socks5h", "socks", "socks4",
    "socks4a", "http", "https", "tg",
)  # fmt: skip
SECRET = "Zq9secret"

HOSTS = ("example.com", "[::1]", "192.0.2.1", "", "a:b", "ex ample", "t.me", "[::1")
BRIDGES = ("obfs4", "Bridge obfs4", "pt:obfs4", "webtunnel", "snowflake")
TG = ("socks", "proxy", "resolve", "")


def _pasted(data: bytes) -> str:
    """One binary draw as pasted text (tests/fuzz/strategies.py: one draw is far cheaper
    than a nest of strategies): the first byte picks a form, the rest fills it."""
    if not data:
        return ""
    form, pick, rest = data[0] % 7, data[1] if len(data) > 1 else 0, data[2:]
    text = rest.decode("utf-8", "replace")
    scheme = SCHEMES[pick % len(SCHEMES)]
    if form == 0:
        return text
    if form == 1:
        return f"{scheme}://{text}"
    if form == 2:
        port = str(int.from_bytes(rest[:3] or b"\0", "big") % 70000)
        return f"{scheme}://u:{SECRET}@{HOSTS[pick % len(HOSTS)]}:{port}{text[3:]}"
    if form == 3:
        return f"tg://{TG[pick % len(TG)]}?{text}"
    if form == 4:
        return f"{BRIDGES[pick % len(BRIDGES)]} 192.0.2.1:443 cert={SECRET} {text}"
    if form == 5:
        return f"dtr1:{text}"
    return f"https://t.me/{TG[pick % len(TG)]}?{text}"


pasted = st.binary(max_size=160).map(_pasted)


@given(pasted)
@example("tg://socks?server=[&port=1")
@example("https://[::1")
@example("obfs4 | socks5://127.0.0.1:1")
@example("http://[::1]:1/x")
def test_anything_pasted_is_recognised_or_refused_in_one_line(text: str) -> None:
    try:
        found = recognise_link(text)
    except LinkError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    assert found.kind
    if found.kind == "subscription":
        assert found.url and not found.chain
    else:
        parse_chain(found.chain)
    if f":{SECRET}@" in text:
        assert SECRET not in found.shown


def _subscription_body(data: bytes) -> bytes:
    """One draw as what a subscription URL might serve: raw bytes, lines of pasted-looking
    links, their base64, or JSON around them."""
    if not data:
        return b""
    form, rest = data[0] % 4, data[1:]
    if form == 0:
        return rest
    lines = "\n".join(_pasted(rest[i : i + 24]) for i in range(0, len(rest), 24)).encode()
    if form == 1:
        return lines
    if form == 2:
        return base64.b64encode(lines)
    text = rest.decode("utf-8", "replace")
    return json.dumps({"servers": [{"server": text, "server_port": 1, "method": text}]}).encode()


# Each example reads several links: a fifth of the profile's examples keeps it as quick as
# the recogniser's property.
@settings(max_examples=max(20, settings.default.max_examples // 5))
@given(st.binary(max_size=300).map(_subscription_body))
@example(b'{"servers": [1, {"plugin": "x"}]}')
@example(b'{"server": "h", "server_port": true}')
@example(base64.b64encode(b"socks5://127.0.0.1:1#a\nsocks5://127.0.0.1:1#a"))
def test_any_subscription_body_is_nodes_or_one_line_error(body: bytes) -> None:
    try:
        parsed = parse_list(body, allow_private=bool(body[:1] == b"s"))
    except SubscriptionError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "\n" not in message
        return
    assert parsed.nodes
    assert len({n.slug.lower() for n in parsed.nodes}) == len(parsed.nodes)
    for node in parsed.nodes:
        parse_chain(node.chain)
        entry_name(f"pool.{node.slug}"[:64])
    assert all("\n" not in reason for reason in parsed.refused)
