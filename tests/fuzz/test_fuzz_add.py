"""The link recogniser under `detour add` (transports/links.recognise_link) takes anything
pasted: every text is either recognised (and then its chain parses, and what is shown does
not quote the secret) or refused with one line, never a traceback.

A recognised link's chain reads back as a chain; a recognised link is shown without the
password it was given."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

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
