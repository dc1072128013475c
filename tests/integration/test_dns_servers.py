"""detour's resolvers against real DNS servers from Debian: unbound answers over UDP, TCP and
TLS, dnsdist in front of it over HTTPS; certificates from the test CA. Then detour itself
resolving through them: `[dns] resolver` and a chain's `resolve:` layer."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.origins import TestCA
from transports import DialError, Failure, Op
from transports.resolver import parse_resolver

pytestmark = pytest.mark.peer

TELEGRAM_V4, TELEGRAM_V6 = "149.154.167.99", "2001:67c:4e8:f004::9"
BIG = [f"149.154.167.{i}" for i in range(1, 61)]  # 60 A records: more than 512 bytes
LOCAL_DATA = [
    f"web.telegram.org. 300 IN A {TELEGRAM_V4}",
    f"web.telegram.org. 300 IN AAAA {TELEGRAM_V6}",
    # What a censoring resolver answers: a private address for a public name.
    "blocked.telegram.org. 300 IN A 10.10.34.35",
    "dns-origin.test. 300 IN A 127.0.0.1",
    *(f"big.telegram.org. 300 IN A {address}" for address in BIG),
]
STATIC_ZONES = ["telegram.org.", "test."]


@pytest.fixture(scope="module")
def dns_tls(test_ca: TestCA) -> tuple:
    return test_ca.issue("dns.test", "127.0.0.1")


@pytest.fixture(scope="module")
def unbound(dns_tls) -> Iterator[peers.Peer]:
    with peers.unbound(LOCAL_DATA, STATIC_ZONES, dns_tls) as peer:
        yield peer


@pytest.fixture(scope="module")
def dnsdist(unbound, dns_tls) -> Iterator[peers.Peer]:
    with peers.dnsdist_doh(unbound, dns_tls) as peer:
        yield peer


@pytest.fixture
def specs(unbound, dnsdist) -> dict[str, str]:
    dot = unbound.extra_ports["dot"]
    return {
        "udp": f"udp=127.0.0.1:{unbound.port}",
        "tcp": f"tcp=127.0.0.1:{unbound.port}",
        "dot": f"dot=127.0.0.1:{dot}",
        "dot-by-name": f"dot=dns.test:{dot};bootstrap=127.0.0.1",
        "doh": f"doh=https://127.0.0.1:{dnsdist.port}/dns-query",
        "doh-by-name": f"doh=https://dns.test:{dnsdist.port}/dns-query;bootstrap=127.0.0.1",
    }


@pytest.fixture
async def resolve(specs, test_ca):
    """resolve(kind, name): a resolver of that kind built from its spec, as detour builds it."""
    built = []

    async def run(kind: str, name: str, context: ssl.SSLContext | None = None):
        resolver = parse_resolver(specs[kind]).build(context or test_ca.client_context())
        built.append(resolver)
        return await resolver.resolve(name)

    yield run
    for resolver in built:
        await resolver.aclose()


KINDS = ["udp", "tcp", "dot", "dot-by-name", "doh", "doh-by-name"]


@pytest.mark.parametrize("kind", KINDS)
async def test_answers_a_and_aaaa(resolve, kind: str) -> None:
    assert await resolve(kind, "web.telegram.org") == [
        ip_address(TELEGRAM_V4),
        ip_address(TELEGRAM_V6),
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_name_is_nxdomain(resolve, kind: str) -> None:
    with pytest.raises(DialError) as err:
        await resolve(kind, "no-such-name.telegram.org")
    assert (err.value.failure, err.value.op) == (Failure.DNS_NXDOMAIN, Op.RESOLVE)


@pytest.mark.parametrize("kind", ["udp", "doh"])
async def test_private_answer_for_a_public_name_is_a_bogon(resolve, kind: str) -> None:
    with pytest.raises(DialError) as err:
        await resolve(kind, "blocked.telegram.org")
    assert err.value.failure is Failure.DNS_BOGON
    assert "10.10.34.35" in err.value.detail


async def test_truncated_udp_answer_is_asked_again_over_tcp(resolve) -> None:
    """unbound answers at most 512 bytes over UDP here: the 60 records come back truncated
    (TC), and the resolver asks again over TCP. (unbound rotates the order of the records.)"""
    assert sorted(await resolve("udp", "big.telegram.org")) == sorted(ip_address(a) for a in BIG)


@pytest.mark.parametrize("kind", ["dot", "doh"])
async def test_unknown_certificate_authority(resolve, kind: str) -> None:
    with pytest.raises(DialError) as err:
        await resolve(kind, "web.telegram.org", ssl.create_default_context())
    assert (err.value.failure, err.value.op) == (Failure.SSL_UNKNOWN_AUTHORITY, Op.RESOLVE)


async def test_doh_certificate_for_another_name(dnsdist, test_ca) -> None:
    spec = f"doh=https://doh.elsewhere.test:{dnsdist.port}/dns-query;bootstrap=127.0.0.1"
    resolver = parse_resolver(spec).build(test_ca.client_context())
    try:
        with pytest.raises(DialError) as err:
            await resolver.resolve("web.telegram.org")
    finally:
        await resolver.aclose()
    assert (err.value.failure, err.value.op) == (Failure.SSL_INVALID_HOSTNAME, Op.RESOLVE)


async def test_nobody_listening() -> None:
    resolver = parse_resolver(f"tcp=127.0.0.1:{peers.free_port()}").build()
    with pytest.raises(DialError) as err:
        await resolver.resolve("web.telegram.org")
    assert (err.value.failure, err.value.op) == (Failure.CONNECTION_REFUSED, Op.RESOLVE)


# --- detour resolving through them --------------------------------------------------------


async def fetch_through(engine, host: str, port: int) -> bytes:
    reader, writer = await open_socks5(engine.mixed_address, host, port)
    writer.write(f"GET /resolved HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    body = await reader.read()
    writer.close()
    return body


@pytest.mark.parametrize("kind", ["doh", "dot"])
async def test_dns_resolver_setting(start_engine, specs, test_ca, http_origin, kind) -> None:
    """`[dns] resolver` with `[tls] extra_ca`: names the client sends unresolved (SOCKS5
    with a name) are resolved by detour through the encrypted resolver."""
    extra = f"""
        [tls]
        extra_ca = ["{test_ca.ca_path}"]
    """
    text = config_text(extra=extra).replace("[dns]\n", f'[dns]\nresolver = "{specs[kind]}"\n', 1)
    engine = await start_engine(text)
    body = await fetch_through(engine, "dns-origin.test", http_origin.port)
    assert body.endswith(b"hello from origin dns-origin.test/resolved\n")


async def test_resolve_layer_in_a_route(start_engine, specs, test_ca, http_origin) -> None:
    text = config_text(
        routes={"encrypted": f"resolve:{specs['doh']} | tlsfrag:sni"},
        extra=f'[tls]\nextra_ca = ["{test_ca.ca_path}"]\n',
    )
    engine = await start_engine(text)
    body = await fetch_through(engine, "dns-origin.test", http_origin.port)
    assert body.endswith(b"hello from origin dns-origin.test/resolved\n")
