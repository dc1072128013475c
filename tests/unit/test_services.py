"""Services (helper/services.py): which service a destination belongs to, and probe
targets."""

from __future__ import annotations

import ipaddress

import pytest

from helper.services import ProbeTarget, Service, ServiceTable, normalize_domain
from transports import Endpoint

TELEGRAM = Service(
    name="telegram",
    domains=("telegram.org", "t.me"),
    cidrs=(
        ipaddress.ip_network("149.154.160.0/20"),
        ipaddress.ip_network("2001:b28:f23d::/48"),
    ),
)
XMPP = Service(name="xmpp", domains=("chat.example",), ports=frozenset({5222, 5223}))


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        pytest.param("telegram.org", True, id="exact"),
        pytest.param("web.telegram.org", True, id="subdomain"),
        pytest.param("a.b.c.telegram.org", True, id="deep-subdomain"),
        pytest.param("WEB.Telegram.ORG", True, id="case"),
        pytest.param("web.telegram.org.", True, id="root-dot"),
        pytest.param("t.me", True, id="short-domain"),
        pytest.param("nottelegram.org", False, id="suffix-without-dot"),
        pytest.param("telegram.org.evil.example", False, id="prefix"),
        pytest.param("telegram.organic", False, id="longer-tld"),
        pytest.param("org", False, id="parent"),
        pytest.param("at.me", False, id="short-suffix-without-dot"),
        pytest.param("example.com", False, id="unrelated"),
    ],
)
def test_domain_suffix_matching(host: str, matches: bool) -> None:
    assert TELEGRAM.matches(Endpoint(host, 443)) is matches


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        pytest.param("149.154.167.51", True, id="v4-inside"),
        pytest.param("149.154.160.0", True, id="v4-first"),
        pytest.param("149.154.175.255", True, id="v4-last"),
        pytest.param("149.154.176.0", False, id="v4-just-outside"),
        pytest.param("149.154.159.255", False, id="v4-just-before"),
        pytest.param("2001:b28:f23d::1", True, id="v6-inside"),
        pytest.param("2001:b28:f23d:ffff:ffff:ffff:ffff:ffff", True, id="v6-last"),
        pytest.param("2001:b28:f23e::1", False, id="v6-outside"),
        pytest.param("::ffff:149.154.167.51", True, id="v4-mapped-inside"),
        pytest.param("::ffff:10.0.0.1", False, id="v4-mapped-outside"),
        pytest.param("::149.154.167.51", False, id="v4-compatible-is-not-mapped"),
    ],
)
def test_cidr_matching(host: str, matches: bool) -> None:
    """An IP destination is matched by address, never by the domain list; an IPv4-mapped IPv6
    address (::ffff:a.b.c.d, what dual-stack sockets report) is the IPv4 destination."""
    assert TELEGRAM.matches(Endpoint(host, 443)) is matches


def test_ip_destination_never_matches_by_domain() -> None:
    service = Service(name="only-domains", domains=("example.com",))
    assert not service.matches(Endpoint("93.184.216.34", 443))


def test_name_never_matches_by_cidr() -> None:
    service = Service(name="only-cidrs", cidrs=(ipaddress.ip_network("10.0.0.0/8"),))
    assert not service.matches(Endpoint("10.example", 443))


@pytest.mark.parametrize(
    ("target", "matches"),
    [
        pytest.param(Endpoint("chat.example", 5222), True, id="listed-port"),
        pytest.param(Endpoint("im.chat.example", 5223), True, id="other-listed-port"),
        pytest.param(Endpoint("chat.example", 443), False, id="unlisted-port"),
        pytest.param(Endpoint("other.example", 5222), False, id="port-but-not-domain"),
    ],
)
def test_ports_restriction(target: Endpoint, matches: bool) -> None:
    assert XMPP.matches(target) is matches


def test_no_ports_means_any_port() -> None:
    assert TELEGRAM.matches(Endpoint("telegram.org", 1))
    assert TELEGRAM.matches(Endpoint("telegram.org", 65535))


def test_table_first_match_wins() -> None:
    broad = Service(name="broad", domains=("example",))
    narrow = Service(name="narrow", domains=("chat.example",))
    table = ServiceTable([XMPP, narrow, broad])
    assert table.match(Endpoint("chat.example", 5222)) is XMPP
    assert table.match(Endpoint("chat.example", 443)) is narrow
    assert table.match(Endpoint("www.example", 443)) is broad
    assert table.match(Endpoint("example.org", 443)) is None
    assert len(table) == 3
    assert list(table) == [XMPP, narrow, broad]


def test_normalize_domain() -> None:
    assert normalize_domain("  Web.Telegram.ORG. ") == "web.telegram.org"


# --- probe targets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "endpoint", "path", "shown"),
    [
        pytest.param(
            "tls://web.telegram.org:443",
            "tls",
            Endpoint("web.telegram.org", 443),
            "/",
            "tls://web.telegram.org:443",
            id="tls",
        ),
        pytest.param(
            "tls://web.telegram.org",
            "tls",
            Endpoint("web.telegram.org", 443),
            "/",
            "tls://web.telegram.org:443",
            id="tls-default-port",
        ),
        pytest.param(
            "tcp://149.154.167.51:443",
            "tcp",
            Endpoint("149.154.167.51", 443),
            "/",
            "tcp://149.154.167.51:443",
            id="tcp",
        ),
        pytest.param(
            "tcp://[2001:b28:f23d::a]:443",
            "tcp",
            Endpoint("2001:b28:f23d::a", 443),
            "/",
            "tcp://[2001:b28:f23d::a]:443",
            id="tcp-ipv6",
        ),
        pytest.param(
            "https://v.whatsapp.net/v2/register",
            "https",
            Endpoint("v.whatsapp.net", 443),
            "/v2/register",
            "https://v.whatsapp.net:443/v2/register",
            id="https-path",
        ),
        pytest.param(
            "http://example.com:8080/gen_204?x=1",
            "http",
            Endpoint("example.com", 8080),
            "/gen_204?x=1",
            "http://example.com:8080/gen_204?x=1",
            id="http-port-query",
        ),
        pytest.param(
            "https://example.com",
            "https",
            Endpoint("example.com", 443),
            "/",
            "https://example.com:443/",
            id="https-no-path",
        ),
        pytest.param(
            "TLS://Web.Telegram.Org:443/",
            "tls",
            Endpoint("web.telegram.org", 443),
            "/",
            "tls://web.telegram.org:443",
            id="case-and-slash",
        ),
    ],
)
def test_probe_target_parse(
    text: str, kind: str, endpoint: Endpoint, path: str, shown: str
) -> None:
    target = ProbeTarget.parse(text)
    assert (target.kind, target.endpoint, target.path) == (kind, endpoint, path)
    assert str(target) == shown
    assert ProbeTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "ftp://example.com",
            "unknown probe kind 'ftp' (known: tcp://, tls://, https://, http://, mtproto://)",
            id="ftp",
        ),
        pytest.param("web.telegram.org:443", "unknown probe kind", id="no-scheme"),
        pytest.param("tcp://example.com", "tcp:// probes need a port", id="tcp-no-port"),
        pytest.param("tcp://:443", "missing host", id="no-host"),
        pytest.param("tcp://example.com:99999", "out of range", id="port-range"),
        pytest.param("tcp://example.com:port", "Port could not be cast", id="port-name"),
        pytest.param("tcp://example.com:443/path", "tcp:// probes take no path", id="tcp-path"),
        pytest.param("tls://example.com:443/path", "tls:// probes take no path", id="tls-path"),
        pytest.param("tcp://[::1:443", "Invalid IPv6 URL", id="broken-ipv6"),
        pytest.param("", "unknown probe kind ''", id="empty"),
    ],
)
def test_probe_target_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        ProbeTarget.parse(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text", ["tls://example.com:0", "https://example.com:0/", "tcp://example.com:0"]
)
def test_probe_target_port_0_is_rejected(text: str) -> None:
    """Port 0 is no destination. `port or default` turns tls://host:0 into port 443 without a
    word, and tcp://host:0 into the misleading "tcp:// probes need a port"."""
    with pytest.raises(ValueError, match="port 0"):
        ProbeTarget.parse(text)
