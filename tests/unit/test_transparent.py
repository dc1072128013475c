"""The transparent listener's parsers: SO_ORIGINAL_DST's socket addresses and the name in a
client's first bytes (TLS SNI, HTTP Host). Untrusted bytes, so also property tests."""

from __future__ import annotations

import socket
import ssl
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.proxy.transparent import (
    first_bytes_complete,
    name_in_first_bytes,
    parse_original_destination,
)
from transports import Endpoint


def client_hello(server_name: str) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def sockaddr_in(ip: str, port: int) -> bytes:
    family = socket.AF_INET.to_bytes(2, sys.byteorder)
    return family + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def sockaddr_in6(ip: str, port: int) -> bytes:
    family = socket.AF_INET6.to_bytes(2, sys.byteorder)
    packed = socket.inet_pton(socket.AF_INET6, ip)
    return family + struct.pack("!H", port) + bytes(4) + packed + bytes(4)


def test_original_destination_ipv4() -> None:
    # family(host order) port 443 addr 149.154.167.51 zero*8
    assert parse_original_destination(sockaddr_in("149.154.167.51", 443)) == Endpoint(
        "149.154.167.51", 443
    )


def test_original_destination_ipv6_and_mapped() -> None:
    assert parse_original_destination(sockaddr_in6("2001:db8::7", 5222)) == Endpoint(
        "2001:db8::7", 5222
    )
    assert parse_original_destination(sockaddr_in6("::ffff:10.1.2.3", 80)) == Endpoint(
        "10.1.2.3", 80
    )


@pytest.mark.parametrize("raw", [b"", b"\x02\x00", sockaddr_in("1.2.3.4", 0), b"\x63" * 16])
def test_original_destination_rejects_nonsense(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_original_destination(raw)


def test_sni_from_a_real_client_hello() -> None:
    hello = client_hello("Web.WhatsApp.com")
    assert first_bytes_complete(hello)
    assert not first_bytes_complete(hello[:-1])
    assert not first_bytes_complete(hello[:3])
    assert name_in_first_bytes(hello) == "web.whatsapp.com"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", "example.org"),
        (b"POST /x HTTP/1.1\r\nUser-Agent: a\r\nhost: Example.org:8080\r\n\r\n", "example.org"),
        (b"GET / HTTP/1.1\r\nHost: 1.2.3.4\r\n\r\n", None),  # an address, not a name
        (b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: bad name\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\n\r\n", None),
        (b"\x00\x01binary", None),
    ],
)
def test_http_host(data: bytes, name: str | None) -> None:
    assert name_in_first_bytes(data) == name


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"", False),
        (b"GE", False),  # may be a method yet
        (b"GET / HTTP/1.1\r\nHost: a\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (b"\x00\x00\x00\x01", True),  # some other protocol: nothing to wait for
        (b"SSH-2.0-OpenSSH_9.6\r\n", True),
    ],
)
def test_first_bytes_complete(data: bytes, complete: bool) -> None:
    assert first_bytes_complete(data) is complete


def first_bytes_parsers_never_raise(data: bytes) -> None:
    first_bytes_complete(data)
    name = name_in_first_bytes(data)
    assert name is None or (name == name.lower() and len(name) <= 253)


def tls_looking_bytes_never_raise(tail: bytes) -> None:
    name_in_first_bytes(b"\x16\x03\x01" + tail)


def original_destination_parser_raises_only_value_error(raw: bytes) -> None:
    try:
        parse_original_destination(raw)
    except ValueError:
        pass


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    data=st.binary(max_size=600),
    tail=st.binary(min_size=0, max_size=300),
    raw=st.binary(max_size=40),
)
def test_first_bytes_tls_and_original_destination_parsers(data, tail, raw) -> None:
    first_bytes_parsers_never_raise(data)
    tls_looking_bytes_never_raise(tail)
    original_destination_parser_raises_only_value_error(raw)
