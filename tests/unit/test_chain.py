"""Chain strings (transports/chain.py): every form users write, the errors that tell them
what would be valid, redaction of secrets, and the Dialers a chain builds."""

from __future__ import annotations

import contextlib
from ipaddress import ip_address

import pytest

from transports import Endpoint
from transports.chain import (
    Chain,
    ChainError,
    DialOptions,
    base_dialer,
    known_layers,
    parse_chain,
    redact,
)
from transports.direct import DirectDialer
from transports.dns import DnsResolver, HttpsTransport, UdpTransport
from transports.http_connect import HttpConnectDialer
from transports.pt import PtDialer, PtManager
from transports.resolver import ResolverSpec, StaticResolver, SystemResolver
from transports.socks import Socks4aDialer, Socks5Dialer
from transports.split import SplitDialer
from transports.tlsfrag import Fragmenting, TlsFragDialer

KNOWN = f"(known: {', '.join(known_layers())})"


def names(chain: Chain) -> list[str]:
    return [layer.name for layer in chain.layers]


# --- valid chains -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "layers", "shown"),
    [
        pytest.param("direct", ["direct"], "direct", id="direct"),
        pytest.param("  direct  ", ["direct"], "direct", id="whitespace"),
        pytest.param(
            "socks5://127.0.0.1:9050",
            ["direct", "socks5"],
            "socks5://127.0.0.1:9050",
            id="socks5-implicit-direct",
        ),
        pytest.param(
            "direct | socks5://127.0.0.1:9050",
            ["direct", "socks5"],
            "direct | socks5://127.0.0.1:9050",
            id="socks5-explicit-direct",
        ),
        pytest.param(
            "socks5h://127.0.0.1:9050",
            ["direct", "socks5"],
            "socks5://127.0.0.1:9050",
            id="socks5h-alias",
        ),
        pytest.param(
            "socks5://alice:secret@10.0.0.2:1080",
            ["direct", "socks5"],
            "socks5://alice:***@10.0.0.2:1080",
            id="socks5-auth",
        ),
        pytest.param(
            "socks4a://127.0.0.1:1080",
            ["direct", "socks4a"],
            "socks4a://127.0.0.1:1080",
            id="socks4a",
        ),
        pytest.param(
            "socks4a://bob@127.0.0.1:1080",
            ["direct", "socks4a"],
            "socks4a://bob@127.0.0.1:1080",
            id="socks4a-user-id",
        ),
        pytest.param(
            "http://proxy.example:3128", ["direct", "http"], "http://proxy.example:3128", id="http"
        ),
        pytest.param(
            "http://alice:secret@proxy.example:3128",
            ["direct", "http"],
            "http://alice:***@proxy.example:3128",
            id="http-auth",
        ),
        pytest.param(
            "socks5://127.0.0.1:9050 | http://proxy.example:3128",
            ["direct", "socks5", "http"],
            "socks5://127.0.0.1:9050 | http://proxy.example:3128",
            id="socks5-then-http",
        ),
        pytest.param(
            "socks5://10.0.0.2:1080|socks4a://10.0.0.3:1080",
            ["direct", "socks5", "socks4a"],
            "socks5://10.0.0.2:1080 | socks4a://10.0.0.3:1080",
            id="no-spaces-around-bar",
        ),
        pytest.param(
            "socks5://[::1]:1080", ["direct", "socks5"], "socks5://[::1]:1080", id="ipv6-proxy"
        ),
        pytest.param(
            "socks5://127.0.0.1:1080/", ["direct", "socks5"], "socks5://127.0.0.1:1080", id="slash"
        ),
        pytest.param("tlsfrag:sni", ["direct", "tlsfrag"], "tlsfrag:sni", id="tlsfrag-sni"),
        pytest.param(
            "TLSFRAG:1, SNI ,Segments",
            ["direct", "tlsfrag"],
            "tlsfrag:1, SNI ,Segments",
            id="tlsfrag-case-and-spaces",
        ),
        pytest.param("split:2,40", ["direct", "split"], "split:2,40", id="split"),
        pytest.param(
            "resolve:doh=https://1.1.1.1/dns-query | tlsfrag:sni",
            ["resolve", "tlsfrag"],
            "resolve:doh=https://1.1.1.1/dns-query | tlsfrag:sni",
            id="doh-then-tlsfrag",
        ),
        pytest.param(
            "socks5://10.0.0.2:1080 | tlsfrag:1",
            ["direct", "socks5", "tlsfrag"],
            "socks5://10.0.0.2:1080 | tlsfrag:1",
            id="tlsfrag-through-socks",
        ),
        pytest.param(
            "resolve:udp=9.9.9.9 | split:1 | tlsfrag:sni",
            ["resolve", "split", "tlsfrag"],
            "resolve:udp=9.9.9.9 | split:1 | tlsfrag:sni",
            id="split-and-tlsfrag",
        ),
    ],
)
def test_valid_chains(text: str, layers: list[str], shown: str) -> None:
    chain = parse_chain(text)
    assert names(chain) == layers
    assert str(chain) == shown
    assert chain.layers[0].implicit == (layers[0] == "direct" and "direct" not in text)


@pytest.mark.parametrize(
    ("text", "how"),
    [
        pytest.param("tlsfrag:sni", Fragmenting(sni=True), id="sni"),
        pytest.param("tlsfrag:1", Fragmenting(offsets=(1,)), id="offset"),
        pytest.param(
            "tlsfrag:sni,segments", Fragmenting(sni=True, segments=True), id="sni-segments"
        ),
        pytest.param(
            "tlsfrag:5,1,sni", Fragmenting(offsets=(5, 1), sni=True), id="several-cut-points"
        ),
    ],
)
def test_tlsfrag_params(text: str, how: Fragmenting) -> None:
    assert parse_chain(text).layers[1].params == {"how": how}


def test_split_params() -> None:
    assert parse_chain("split:1,5,300").layers[1].params == {"offsets": (1, 5, 300)}


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        pytest.param("resolve:system", ResolverSpec("system"), id="system"),
        pytest.param("resolve:udp=1.1.1.1", ResolverSpec("udp", Endpoint("1.1.1.1", 53)), id="udp"),
        pytest.param(
            "resolve:tcp=[2606:4700:4700::1111]:5353",
            ResolverSpec("tcp", Endpoint("2606:4700:4700::1111", 5353)),
            id="tcp-v6",
        ),
        pytest.param(
            "resolve:dot=dns.quad9.net;bootstrap=9.9.9.9,149.112.112.112",
            ResolverSpec(
                "dot",
                Endpoint("dns.quad9.net", 853),
                bootstrap=(ip_address("9.9.9.9"), ip_address("149.112.112.112")),
            ),
            id="dot-name-bootstrap",
        ),
        pytest.param(
            "resolve:doh=https://1.1.1.1/dns-query",
            ResolverSpec("doh", Endpoint("1.1.1.1", 443), "https://1.1.1.1/dns-query"),
            id="doh-ip",
        ),
        pytest.param(
            "resolve:doh:https://dns.google:8443/dns-query;bootstrap=8.8.8.8;allow_private=true",
            ResolverSpec(
                "doh",
                Endpoint("dns.google", 8443),
                "https://dns.google:8443/dns-query",
                (ip_address("8.8.8.8"),),
                allow_private=True,
            ),
            id="doh-url-spelling-and-options",
        ),
        pytest.param(
            "resolve:udp://10.0.0.1:5353",
            ResolverSpec("udp", Endpoint("10.0.0.1", 5353)),
            id="udp-url-spelling",
        ),
    ],
)
def test_resolve_params(text: str, spec: ResolverSpec) -> None:
    assert parse_chain(text).layers[0].params == {"resolver": spec}


def test_socks5_params() -> None:
    layer = parse_chain("socks5://alice:secret@10.0.0.2:1080").layers[1]
    assert layer.params == {
        "proxy": Endpoint("10.0.0.2", 1080),
        "username": "alice",
        "password": "secret",
    }


def test_socks5_without_auth_params() -> None:
    layer = parse_chain("socks5h://[::1]:9050").layers[1]
    assert layer.params == {"proxy": Endpoint("::1", 9050), "username": None, "password": None}


def test_socks4a_user_id_params() -> None:
    assert parse_chain("socks4a://bob@h.example:1080").layers[1].params == {
        "proxy": Endpoint("h.example", 1080),
        "user_id": "bob",
    }
    assert parse_chain("socks4a://h.example:1080").layers[1].params["user_id"] == ""


def test_percent_encoded_credentials_are_decoded() -> None:
    """Passwords with '@', ':' or '/' must be percent-encoded in a URL; detour decodes them."""
    layer = parse_chain("socks5://al%40ice:p%40ss%3Aw%2Frd%20x@proxy.example:1080").layers[1]
    assert layer.params["username"] == "al@ice"
    assert layer.params["password"] == "p@ss:w/rd x"
    assert str(layer) == "socks5://al%40ice:***@proxy.example:1080"


def test_colon_in_socks5_password_needs_no_encoding() -> None:
    layer = parse_chain("socks5://alice:pa:ss@proxy.example:1080").layers[1]
    assert (layer.params["username"], layer.params["password"]) == ("alice", "pa:ss")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("SOCKS5://127.0.0.1:1080", id="socks5-upper"),
        pytest.param("Http://proxy.example:3128", id="http-mixed"),
    ],
)
def test_layer_scheme_is_case_insensitive(text: str) -> None:
    """URL schemes are case-insensitive (RFC 3986 §3.1) and the layer name is looked up
    lower-cased (`SOCKS5H://` already works), so `SOCKS5://` must not be refused with
    "write socks5 layers as socks5://..."."""
    chain = parse_chain(text)
    assert names(chain) == ["direct", text.split(":", 1)[0].lower()]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", f"empty chain (known layers: {', '.join(known_layers())})", id="empty"),
        pytest.param("   ", "empty chain", id="blank"),
        pytest.param("direct |", "empty layer between '|' separators", id="trailing-bar"),
        pytest.param("| direct", "empty layer", id="leading-bar"),
        pytest.param("direct || socks5://h:1", "empty layer", id="double-bar"),
        pytest.param(
            "sock5://h:1080", f"unknown layer 'sock5' {KNOWN}; did you mean 'socks5'?", id="sock5"
        ),
        pytest.param(
            "socks4://h:1080",
            f"unknown layer 'socks4' {KNOWN}; did you mean 'socks4a'?",
            id="socks4",
        ),
        pytest.param(
            "https://h:443", f"unknown layer 'https' {KNOWN}; did you mean 'http'?", id="https"
        ),
        pytest.param("drect", f"unknown layer 'drect' {KNOWN}; did you mean 'direct'?", id="drect"),
        pytest.param(
            "sock5h://h:1",
            f"unknown layer 'sock5h' {KNOWN}; did you mean 'socks5'?",
            id="alias-typo",
        ),
        pytest.param(
            "tlsfrg:sni", f"unknown layer 'tlsfrg' {KNOWN}; did you mean 'tlsfrag'?", id="tlsfrg"
        ),
        pytest.param("tlsfrag", "write tlsfrag layers as tlsfrag:N|sni", id="tlsfrag-bare"),
        pytest.param("tlsfrag:", "write tlsfrag layers as tlsfrag:N|sni", id="tlsfrag-empty"),
        pytest.param("tlsfrag:segments", "give where to cut, an offset or sni", id="no-cut"),
        pytest.param("tlsfrag:0", "'0' is not a byte offset 1-16383", id="tlsfrag-0"),
        pytest.param("tlsfrag:16384", "not a byte offset 1-16383", id="tlsfrag-past-record"),
        pytest.param("tlsfrag:-1", "'-1' is not a byte offset", id="tlsfrag-negative"),
        pytest.param("tlsfrag:host", "'host' is not a byte offset", id="tlsfrag-word"),
        pytest.param("tlsfrag:sni,sni", "an argument is given twice", id="tlsfrag-twice"),
        pytest.param("split", "write split layers as split:N[,M...]", id="split-bare"),
        pytest.param("split:0", "'0' is not a byte offset 1-65535", id="split-0"),
        pytest.param("split:1,", "'' is not a byte offset", id="split-trailing-comma"),
        pytest.param("split:5,2", "offsets must be strictly increasing", id="split-order"),
        pytest.param("split:3,3", "offsets must be strictly increasing", id="split-repeat"),
        pytest.param("resolve", "write resolve layers as resolve:system", id="resolve-bare"),
        pytest.param("resolve:8.8.8.8", "resolve: unknown resolver '8.8.8.8'", id="resolve-ip"),
        pytest.param("resolve:udp=dns.google", "give the resolver's IP address", id="udp-name"),
        pytest.param(
            "resolve:doh=https://dns.google/dns-query",
            "dns.google is a name; add its addresses with ;bootstrap=IP",
            id="doh-name-without-bootstrap",
        ),
        pytest.param("resolve:doh=http://1.1.1.1/q", "is an https:// URL", id="doh-http"),
        pytest.param(
            "resolve:dot=1.1.1.1;bootstrap=1.0.0.1",
            "only needed when the server is given by name",
            id="bootstrap-for-ip",
        ),
        pytest.param(
            "resolve:udp=1.1.1.1;bootstrap=1.0.0.1",
            "unknown option 'bootstrap=1.0.0.1'",
            id="udp-bootstrap",
        ),
        pytest.param(
            "tlsfrag:sni | resolve:system",
            "'resolve' can only be the first layer",
            id="resolve-2nd",
        ),
        pytest.param(
            "resolve:system | direct", "'direct' can only be the first layer", id="two-bases"
        ),
        pytest.param("socks5://proxy.example", "missing proxy port (socks5://", id="no-port"),
        pytest.param("http://proxy.example", "missing proxy port (http://", id="http-no-port"),
        pytest.param("socks5://:1080", "missing proxy host", id="no-host"),
        pytest.param("socks5://h:0", "port 0 is not a valid proxy port", id="port-0"),
        pytest.param("socks5://h:99999", "out of range", id="port-too-big"),
        pytest.param("socks5://h:port", "socks5://h:***", id="port-not-a-number"),  # or a password
        # an unclosed IPv6 literal is a broken host, no user name: shown, not hidden whole
        pytest.param("http://[::1:3128", "'http://[::1:3128' is not a valid", id="ipv6-unclosed"),
        pytest.param("socks5://[::1]:pw", "socks5://[::1]:***", id="ipv6-port-not-a-number"),
        pytest.param("socks5://h:1080/path", "takes no path or query", id="path"),
        pytest.param("socks5://h:1080?timeout=5", "takes no path or query", id="query"),
        pytest.param("http://h:3128#x", "takes no path or query", id="fragment"),
        pytest.param("socks5:h:1080", "write socks5 layers as socks5://", id="no-slashes"),
        pytest.param("socks5", "write socks5 layers as socks5://[USER:PASS@]HOST:PORT", id="bare"),
        pytest.param(
            "socks5://h:1 | direct", "'direct' can only be the first layer", id="direct-not-first"
        ),
        pytest.param("direct | direct", "'direct' can only be the first layer", id="two-directs"),
        pytest.param("direct:fast", "'direct' takes no arguments", id="direct-args"),
        pytest.param("socks5://alice@h:1080", "give both a username and a password", id="no-pass"),
        pytest.param("socks5://:pw@h:1080", "give both a username and a password", id="no-user"),
        pytest.param("socks4a://bob:pw@h:1080", "SOCKS4a has no passwords", id="socks4a-pass"),
        pytest.param("http://al%3Aice:pw@h:3128", "cannot contain ':'", id="http-colon-user"),
        pytest.param(f"socks5://{'u' * 256}:pw@h:1080", "username must be 1-255", id="long-user"),
        pytest.param(f"socks5://u:{'p' * 256}@h:1080", "password must be 1-255", id="long-pass"),
    ],
)
def test_chain_errors(text: str, message: str) -> None:
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert message in str(err.value)


def test_chain_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_chain("nope")


@pytest.mark.parametrize("value", [None, 5, b"direct"])
def test_non_string_chain(value: object) -> None:
    with pytest.raises(ChainError, match="empty chain"):
        parse_chain(value)  # type: ignore[arg-type]


# --- secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "socks5://alice:secret@10.0.0.2:1080",
            "socks5://alice:***@10.0.0.2:1080",
            id="userinfo",
        ),
        pytest.param("socks5://:secret@h:1", "socks5://:***@h:1", id="empty-user"),
        pytest.param("socks5://alice@h:1", "socks5://alice@h:1", id="no-password"),
        pytest.param(
            "socks5://a:x@h:1 | http://b:y@p:2",
            "socks5://a:***@h:1 | http://b:***@p:2",
            id="two-layers",
        ),
        pytest.param(
            "front:https://relay.example/ws?front=cdn.example&key=c2VjcmV0a2V5",
            "front:https://relay.example/ws?front=cdn.example&key=***",
            id="key-param",
        ),
        # A bridge is a secret down to its address: the whole pt layer goes.
        pytest.param("pt:obfs4?cert=AbCdEf&iat-mode=0", "pt:obfs4 ***", id="pt-query"),
        pytest.param(
            "pt:obfs4 192.0.2.3:443 cert=AbCdEf iat-mode=0 | socks5://127.0.0.1:1080",
            "pt:obfs4 *** | socks5://127.0.0.1:1080",
            id="pt-bridge-line",
        ),
        pytest.param(
            "route 'pt:Bridge webtunnel [2001:db8::1]:443 url=https://a.example/x' failed",
            "route 'pt:webtunnel ***",  # to the end of the line: a quote may be in the bridge
            id="pt-quoted-bridge-word",
        ),
        pytest.param(
            "pt:obfs4: the bridge needs iat-mode=0, 1 or 2",
            "pt:obfs4: the bridge needs iat-mode=0, 1 or 2",
            id="pt-message-left-alone",
        ),
        pytest.param(
            "socks5://joe'pt:hunter2@h:1",
            "socks5://joe'pt:***@h:1",  # a user name ending in 'pt: is no pt layer
            id="pt-inside-a-user-name",
        ),
        pytest.param("x?password=hunter2&token=t0k", "x?password=***&token=***", id="params"),
        pytest.param("x?KEY=abc", "x?KEY=***", id="param-case"),
        pytest.param(
            "direct | socks5://127.0.0.1:9050", "direct | socks5://127.0.0.1:9050", id="none"
        ),
        pytest.param(
            "route[0].chain: 'socks5://bob:pw@h:1': missing port",
            "route[0].chain: 'socks5://bob:***@h:1': missing port",
            id="inside-a-message",
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("socks5://alice:s3cr3tPW@h", id="missing-port"),
        pytest.param("socks5://alice:s3cr3tPW@h:0", id="port-0"),
        pytest.param("socks5://alice:s3cr3tPW@h:99999", id="port-range"),
        pytest.param("socks5://alice:s3cr3tPW@h:1080/x", id="path"),
        pytest.param("socks5://alice:s3cr3tPW@:1080", id="no-host"),
        pytest.param("socks4a://alice:s3cr3tPW@h:1080", id="socks4a-password"),
        pytest.param("socks5:alice:s3cr3tPW@h:1080", id="no-slashes"),
        pytest.param("socks5://:s3cr3tPW@h:1080", id="no-user"),
        pytest.param("sock5://alice:s3cr3tPW@h:1080", id="unknown-layer"),
        pytest.param("socks5://alice:s3cr3tPW@h:1080 | direct", id="direct-not-first"),
        pytest.param("http://al%3Ace:s3cr3tPW@h:1080", id="http-colon-user"),
        pytest.param(f"socks5://{'u' * 300}:s3cr3tPW@h:1080", id="long-user"),
    ],
)
def test_errors_never_show_the_password(text: str) -> None:
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert "s3cr3tPW" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("socks5 ://alice:s3cr3tPW@h:1080", id="space-before-scheme-separator"),
        pytest.param("://alice:s3cr3tPW@h:1080", id="no-scheme"),
        pytest.param("5ocks://alice:s3cr3tPW@h:1080", id="scheme-starts-with-digit"),
    ],
)
def test_unknown_layer_error_never_shows_the_password(text: str) -> None:
    """A typo before '://' makes the layer name unreadable; the error then quotes the whole
    layer text, and redact() does not recognise it as a URL, so the password is printed."""
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert "s3cr3tPW" not in str(err.value)


def test_unencoded_slash_in_password_is_not_shown_in_the_error() -> None:
    """Users paste passwords as they are; a '/' ends the authority, urlsplit then reads
    "pa" as the port and the error quotes the text unredacted."""
    with pytest.raises(ChainError) as err:
        parse_chain("socks5://alice:pa/ss-s3cr3t@h:1080")
    assert "s3cr3t" not in str(err.value)
    assert "alice:pa" not in str(err.value)


def test_unencoded_at_in_password_is_not_shown() -> None:
    """urlsplit splits userinfo at the last '@' so the chain is accepted with password
    "hunter2@s3cr3t", but redact() stops at the first '@' and shows "s3cr3t"."""
    chain = parse_chain("socks5://alice:hunter2@s3cr3t@h:1080")
    assert chain.layers[1].params["password"] == "hunter2@s3cr3t"
    assert "s3cr3t" not in str(chain)
    assert "hunter2" not in str(chain)


@pytest.mark.parametrize(
    ("text", "password"),
    [
        pytest.param("socks5://alice:UPW9 s3cr3t@10.0.0.2:1080", "UPW9 s3cr3t", id="space"),
        pytest.param("socks5://alice:UPW9\ts3cr3t@10.0.0.2:1080", "UPW9\ts3cr3t", id="tab"),
        pytest.param("http://alice:UPW9%7Cs3cr3t@10.0.0.2:1080", "UPW9|s3cr3t", id="bar-encoded"),
        pytest.param("socks5://alice: UPW9 s3cr3t @10.0.0.2:1080", " UPW9 s3cr3t ", id="ends"),
    ],
)
def test_blank_passwords_are_used_whole_and_never_shown(text: str, password: str) -> None:
    """A space or a tab is part of the password (urlsplit drops tabs without a word: they
    are kept), and neither str(), repr() nor redact() shows any word of it."""
    chain = parse_chain(f"{text} | tlsfrag:sni")
    assert chain.layers[1].params["password"] == password
    for shown in (str(chain), repr(chain), redact(text), redact(f"route 'x': {text} | direct")):
        assert "UPW9" not in shown and "s3cr3t" not in shown, shown
    assert str(chain) == f"{text.split('://')[0]}://alice:***@10.0.0.2:1080 | tlsfrag:sni"


@pytest.mark.parametrize(
    "text",
    [
        "socks5://alice:UPW9|s3cr3t@10.0.0.2:1080",
        "socks5://alice:UPW9|s3cr3t@10.0.0.2:1080 | tlsfrag:sni",
        "tlsfrag:sni | http://alice:UPW9 |s3cr3t@10.0.0.2:1080",
        "socks5://alice:UPW9|http://s3cr3t@10.0.0.2:1080",
        "socks5://alice:UPW9@x|s3cr3t@10.0.0.2:1080",
    ],
)
def test_a_bar_in_a_password_is_explained_without_either_half(text: str) -> None:
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    message = str(err.value)
    assert "%7C" in message, message
    assert "UPW9" not in message and "s3cr3t" not in message, message
    assert "UPW9" not in redact(text) and "s3cr3t" not in redact(text), redact(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("socks5://alice:UPW9|s3cr3t@10.0.0.2:1080", "socks5://alice:***@10.0.0.2:1080"),
        ("tlsfrag:sni | http://bob:UPW9 |s3cr3t@h:1 | split:1", "http://bob:***@h:1"),
        ("socks5://alice:UPW9@x|s3cr3t@10.0.0.2:1080", "socks5://alice:***@10.0.0.2:1080"),
        ("socks5://al|ice:UPW9s3cr3t@h:1", "socks5://al|ice:***@h:1"),
    ],
)
def test_a_bar_in_a_password_shows_the_user_name(text: str, shown: str) -> None:
    """The message names the URL as redact() shows it: the user name and the host, so that
    the owner sees which proxy is meant; never a half of the password."""
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert str(err.value).startswith(f"{shown}: not a proxy address;"), str(err.value)


def test_userinfo_shown_parses_back() -> None:
    """str(layer) is built from what was parsed; user names are percent-encoded where they
    must be, so what is shown is a chain again (with *** for the password)."""
    chain = parse_chain("socks5://al%40ice b%7Cc:pw@h:1 | socks4a://b%3Ab%20ob@h:2")
    assert str(chain) == "socks5://al%40ice%20b%7Cc:***@h:1 | socks4a://b%3Ab%20ob@h:2"
    again = parse_chain(str(chain))
    assert again.layers[1].params["username"] == "al@ice b|c"
    assert again.layers[2].params["user_id"] == "b:b ob"


def test_str_keeps_username_and_hides_password() -> None:
    chain = parse_chain("socks5://alice:s3cr3tPW@10.0.0.2:1080 | http://bob:0therPW@p:3128")
    shown = str(chain)
    assert shown == "socks5://alice:***@10.0.0.2:1080 | http://bob:***@p:3128"
    for layer in chain.layers:
        assert "s3cr3tPW" not in str(layer) and "0therPW" not in str(layer)


def test_repr_never_shows_the_password() -> None:
    """Chains end up in RouteConfig and Config, whose reprs land in logs, debuggers and
    tracebacks; config.User already hides its password from repr."""
    chain = parse_chain("socks5://alice:s3cr3tPW@10.0.0.2:1080")
    assert "s3cr3tPW" not in repr(chain)
    assert "s3cr3tPW" not in repr(chain.layers[1])


# --- building -----------------------------------------------------------------------------


def test_build_direct_uses_the_options() -> None:
    resolver = StaticResolver({"example.com": ["192.0.2.1"]})
    dialer = parse_chain("direct").build(
        DialOptions(resolver=resolver, connect_timeout=3.0, attempt_delay=0.1)
    )
    assert isinstance(dialer, DirectDialer)
    assert dialer.resolver is resolver
    assert dialer.connect_timeout == 3.0
    assert dialer.attempt_delay == 0.1


def test_build_nests_layers_left_to_right() -> None:
    """The left-most layer is closest to the network: the right-most Dialer is outermost."""
    dialer = parse_chain(
        "socks5://alice:secret@10.0.0.2:1080 | socks4a://bob@10.0.0.3:1080 | http://p.example:3128"
    ).build(DialOptions(handshake_timeout=4.0))
    assert isinstance(dialer, HttpConnectDialer)
    assert dialer.proxy == Endpoint("p.example", 3128)
    assert dialer.handshake_timeout == 4.0
    socks4 = dialer.inner
    assert isinstance(socks4, Socks4aDialer)
    assert socks4.proxy == Endpoint("10.0.0.3", 1080)
    assert socks4._user_id == b"bob"
    socks5 = socks4.inner
    assert isinstance(socks5, Socks5Dialer)
    assert socks5.proxy == Endpoint("10.0.0.2", 1080)
    assert (socks5._username, socks5._password) == (b"alice", b"secret")
    assert socks5.handshake_timeout == 4.0
    assert isinstance(socks5.inner, DirectDialer)


def test_build_http_with_credentials_sends_basic_auth() -> None:
    dialer = parse_chain("http://alice:secret@p.example:3128").build()
    assert isinstance(dialer, HttpConnectDialer)
    assert dialer._authorization == b"Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n"
    assert "secret" not in repr(dialer)


def test_build_default_options() -> None:
    dialer = parse_chain("socks5://127.0.0.1:9050").build()
    assert isinstance(dialer, Socks5Dialer)
    assert dialer.handshake_timeout == DialOptions().handshake_timeout
    assert isinstance(dialer.inner, DirectDialer)


def test_build_tlsfrag_wraps_the_proxy_tunnel() -> None:
    """`socks5://... | tlsfrag:1`: the ClientHello sent through the tunnel is fragmented."""
    dialer = parse_chain("socks5://10.0.0.2:1080 | tlsfrag:1,segments").build()
    assert isinstance(dialer, TlsFragDialer)
    assert dialer.how == Fragmenting(offsets=(1,), segments=True)
    assert isinstance(dialer.inner, Socks5Dialer)


def test_build_split_then_tlsfrag() -> None:
    dialer = parse_chain("split:1 | tlsfrag:sni").build()
    assert isinstance(dialer, TlsFragDialer)
    assert isinstance(dialer.inner, SplitDialer) and dialer.inner.offsets == (1,)
    assert isinstance(dialer.inner.inner, DirectDialer)


def test_build_resolve_makes_a_direct_dialer_with_its_own_resolver() -> None:
    engine_resolver = StaticResolver({})
    dialer = parse_chain("resolve:udp=9.9.9.9").build(
        DialOptions(resolver=engine_resolver, connect_timeout=3.0)
    )
    assert isinstance(dialer, DirectDialer)
    assert dialer.connect_timeout == 3.0
    assert isinstance(dialer.resolver, DnsResolver)
    assert isinstance(dialer.resolver.transport, UdpTransport)
    assert dialer.resolver.transport.server == Endpoint("9.9.9.9", 53)
    assert not dialer.resolver.allow_private


def test_build_resolve_system() -> None:
    dialer = parse_chain("resolve:system").build()
    assert isinstance(dialer, DirectDialer) and isinstance(dialer.resolver, SystemResolver)


async def test_build_resolve_puts_hosts_first_and_registers_closing() -> None:
    async with contextlib.AsyncExitStack() as resources:
        dialer = parse_chain("resolve:doh=https://1.1.1.1/dns-query").build(
            DialOptions(hosts={"origin.test": ["127.0.0.1"]}, resources=resources)
        )
        assert isinstance(dialer, DirectDialer)
        static = dialer.resolver
        assert isinstance(static, StaticResolver)
        assert await static.resolve("origin.test") == [ip_address("127.0.0.1")]
        assert isinstance(static.fallback, DnsResolver)
        assert isinstance(static.fallback.transport, HttpsTransport)
        assert static.fallback.query_id_zero  # RFC 8484 §4.1
        assert len(resources._exit_callbacks) == 1  # the DoH session is closed with the stack


def test_resolve_error_never_shows_a_password() -> None:
    with pytest.raises(ChainError) as err:
        parse_chain("resolve:doh=https://user:s3cr3tPW@dns.example/q")
    assert "s3cr3tPW" not in str(err.value)


# --- pt layers ----------------------------------------------------------------------------

BRIDGE = "obfs4 192.0.2.3:443 cert=s3cr3tCERT+/x iat-mode=0"


@pytest.mark.parametrize(
    ("text", "layers", "shown", "upstream"),
    [
        pytest.param(
            f"pt:{BRIDGE} | socks5://127.0.0.1:1080",
            ["direct", "pt", "socks5"],
            "pt:obfs4 *** | socks5://127.0.0.1:1080",
            None,
            id="bridge-line",
        ),
        pytest.param(
            f"PT:Bridge {BRIDGE} | http://127.0.0.1:3128 | tlsfrag:sni",
            ["direct", "pt", "http", "tlsfrag"],
            "pt:obfs4 *** | http://127.0.0.1:3128 | tlsfrag:sni",
            None,
            id="bridge-word-then-http-then-tlsfrag",
        ),
        pytest.param(
            "direct | pt:obfs4?addr=192.0.2.3:443&cert=s3cr3tCERT&iat-mode=0 | socks4a://h:1",
            ["direct", "pt", "socks4a"],
            "direct | pt:obfs4 *** | socks4a://h:1",
            None,
            id="query-form-explicit-direct",
        ),
        pytest.param(
            f"socks5://al%40ice:p%3Aw@10.0.0.2:1080 | pt:{BRIDGE} | socks5://127.0.0.1:1080",
            ["direct", "socks5", "pt", "socks5"],
            "socks5://al%40ice:***@10.0.0.2:1080 | pt:obfs4 *** | socks5://127.0.0.1:1080",
            "socks5://al%40ice:p%3Aw@10.0.0.2:1080",
            id="through-socks5-with-login",
        ),
        pytest.param(
            f"socks4a://bob@10.0.0.2:1080 | pt:{BRIDGE} | socks5://127.0.0.1:1080",
            ["direct", "socks4a", "pt", "socks5"],
            "socks4a://bob@10.0.0.2:1080 | pt:obfs4 *** | socks5://127.0.0.1:1080",
            "socks4a://bob@10.0.0.2:1080",
            id="through-socks4a",
        ),
        pytest.param(
            f"http://[2001:db8::2]:3128 | pt:{BRIDGE} | socks5://127.0.0.1:1080",
            ["direct", "http", "pt", "socks5"],
            "http://[2001:db8::2]:3128 | pt:obfs4 *** | socks5://127.0.0.1:1080",
            "http://[2001:db8::2]:3128",
            id="through-http-ipv6",
        ),
    ],
)
def test_pt_chains(text: str, layers: list[str], shown: str, upstream: str | None) -> None:
    chain = parse_chain(text)
    assert names(chain) == layers
    assert str(chain) == shown
    assert "s3cr3t" not in repr(chain)
    pt = next(layer for layer in chain.layers if layer.name == "pt")
    assert pt.params.get("upstream") == upstream
    assert not chain.resolves_locally


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(f"pt:{BRIDGE}", "must be named next", id="nothing-after"),
        pytest.param(f"pt:{BRIDGE} | tlsfrag:sni", "must be named next", id="tlsfrag-after"),
        pytest.param(f"tlsfrag:1 | pt:{BRIDGE} | socks5://h:1", "only direct and one", id="frag"),
        pytest.param(
            f"resolve:udp=9.9.9.9 | pt:{BRIDGE} | socks5://h:1", "only direct and one", id="resolve"
        ),
        pytest.param(
            f"socks5://10.0.0.1:1 | http://10.0.0.2:2 | pt:{BRIDGE} | socks5://h:1",
            "only direct and one",
            id="two-proxies",
        ),
        pytest.param(
            f"pt:{BRIDGE} | socks5://h:1 | pt:{BRIDGE} | socks5://h:1", "only one pt", id="two"
        ),
        pytest.param(
            f"socks5://proxy.example:1080 | pt:{BRIDGE} | socks5://h:1",
            "IP address, not a name",
            id="proxy-by-name",
        ),
        pytest.param(
            "pt:obfs4 192.0.2.3:443 cert=s3cr3tCERT | socks5://h:1", "iat-mode", id="spec"
        ),
    ],
)
def test_pt_chain_errors(text: str, message: str) -> None:
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert message in str(err.value)
    assert "s3cr3t" not in str(err.value) and "192.0.2.3" not in str(err.value)


async def test_build_pt_shares_the_engines_manager_or_makes_its_own() -> None:
    chain = parse_chain(f"socks5://10.0.0.2:1080 | pt:{BRIDGE} | socks5://127.0.0.1:1080")
    manager = PtManager()
    dialer = chain.build(DialOptions(pluggable=manager, handshake_timeout=4.0))
    assert isinstance(dialer, Socks5Dialer) and dialer.proxy == Endpoint("127.0.0.1", 1080)
    pt = dialer.inner
    assert isinstance(pt, PtDialer)
    assert pt.manager is manager
    assert pt._proxy_url == "socks5://10.0.0.2:1080"
    assert pt._handshake_timeout == 4.0
    assert base_dialer(dialer) is pt  # the PT client makes the connection
    assert "s3cr3t" not in repr(dialer)
    async with contextlib.AsyncExitStack() as resources:
        own = parse_chain(f"pt:{BRIDGE} | socks5://127.0.0.1:1080").build(
            DialOptions(resources=resources)
        )
        assert isinstance(own.inner, PtDialer)
        assert len(resources._exit_callbacks) == 1  # its children stop with the stack


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("socks5://u:12#34@10.0.0.1:1", "an '@' after the proxy address; percent-encode"),
        ("socks5://u::7/x@10.0.0.1:1", "an '@' after the proxy address; percent-encode"),
        ("socks5://u:a||b@10.0.0.1:1", "write it %7C"),  # (was "empty layer")
        ("socks5://u:p@a b:1", "the proxy host is not a host name or IP address"),
        ("http://u:p@%20:1", "the proxy host is not a host name or IP address"),
        ("socks5://h:7:8", "is not a valid proxy address"),  # (was "port 7 is out of range")
    ],
)
def test_proxy_url_mistakes_are_named(text: str, says: str) -> None:
    with pytest.raises(ChainError) as err:
        parse_chain(text)
    assert says in str(err.value)
    for secret in ("34", "x@", "a||b"):
        assert secret not in str(err.value)


def test_a_user_name_with_a_blank_and_a_scheme_does_not_show_the_password() -> None:
    """`a? b://` in a user name is no URL: redaction took it for one and showed the password
    after it."""
    with pytest.raises(ChainError) as err:
        parse_chain("socks5://7? a://s3cr3t/@h:24")
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ChainError) as err:
        parse_chain("socks5://@|?#://|s3cr3t:@10.0.0.1:149")
    assert "s3cr3t" not in str(err.value)
