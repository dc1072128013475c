"""detour's SOCKS server parsers (helper/proxy/socks.py): bytes in, (consumed, message) out,
NeedMore on a prefix of a valid message, or ProtocolError carrying the protocol's own error
answer. Wire bytes are commented field by field."""

from __future__ import annotations

import pytest

from helper.proxy.handshake import NeedMore, ProtocolError
from helper.proxy.socks import (
    Credentials,
    Socks4Request,
    Socks5Greeting,
    Socks5Request,
    parse_socks4_request,
    parse_socks5_auth,
    parse_socks5_greeting,
    parse_socks5_request,
    socks4_reply,
    socks5_reply,
)
from transports import Endpoint

# 253 characters in 63-character labels: the longest name RFC 1035 allows.
NAME_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
NAME_254 = NAME_253 + "d"
assert len(NAME_253) == 253 and len(NAME_254) == 254

# Replies detour sends when it refuses a SOCKS5 request (RFC 1928 §6).
REP_01 = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00"  # v5 general-failure RSV IP4 0.0.0.0 :0
REP_07 = b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"  # v5 command-not-supported ...
REP_08 = b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00"  # v5 address-type-not-supported ...
SOCKS4_REJECTED = b"\x00\x5b\x00\x00\x00\x00\x00\x00"  # VN=0 5B(rejected) PORT IP


def socks5_name_request(name: bytes, port: bytes = b"\x01\xbb", cmd: int = 1) -> bytes:
    # v5 CMD RSV NAME LEN NAME PORT
    return bytes([0x05, cmd, 0x00, 0x03, len(name)]) + name + port


def socks4a_request(name: bytes, user: bytes = b"", port: bytes = b"\x01\xbb") -> bytes:
    # v4 CONNECT PORT 0.0.0.1 USERID NUL NAME NUL
    return b"\x04\x01" + port + b"\x00\x00\x00\x01" + user + b"\x00" + name + b"\x00"


# --- replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "bound", "wire"),
    [
        pytest.param(0x00, None, b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00", id="no-bound"),
        pytest.param(
            0x00,
            Endpoint("127.0.0.1", 1080),
            b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38",  # v5 SUC RSV IP4 127.0.0.1 :1080
            id="ipv4-bound",
        ),
        pytest.param(
            0x00,
            Endpoint("::1", 443),
            b"\x05\x00\x00\x04" + b"\x00" * 15 + b"\x01" + b"\x01\xbb",  # v5 SUC RSV IP6 ::1 :443
            id="ipv6-bound",
        ),
        pytest.param(
            0x05,
            Endpoint("example.com", 80),
            b"\x05\x05\x00\x03\x0bexample.com\x00\x50",  # v5 refused RSV NAME 11 ... :80
            id="name-bound",
        ),
        pytest.param(0x07, None, REP_07, id="command-not-supported"),
    ],
)
def test_socks5_reply(code: int, bound: Endpoint | None, wire: bytes) -> None:
    assert socks5_reply(code, bound) == wire


def test_socks4_replies() -> None:
    """SOCKS4 replies are 8 bytes: VN=0, 5A granted / 5B rejected, then ignored fields."""
    assert socks4_reply(True) == b"\x00\x5a" + b"\x00" * 6
    assert socks4_reply(False) == SOCKS4_REJECTED


# --- greeting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "consumed", "methods"),
    [
        pytest.param(b"\x05\x01\x00", 3, {0x00}, id="no-auth"),  # v5 NMETHODS=1 NOAUTH
        pytest.param(b"\x05\x02\x00\x02", 4, {0x00, 0x02}, id="no-auth-and-userpass"),
        pytest.param(b"\x05\x02\x02\x02", 4, {0x02}, id="duplicate-methods"),
        pytest.param(bytes([5, 255, *range(255)]), 257, set(range(255)), id="255-methods"),
        pytest.param(
            b"\x05\x01\x00\x05\x01\x00\x01",  # greeting, then the request already arriving
            3,
            {0x00},
            id="pipelined-request",
        ),
    ],
)
def test_greeting_parses(wire: bytes, consumed: int, methods: set[int]) -> None:
    assert parse_socks5_greeting(wire) == (consumed, Socks5Greeting(frozenset(methods)))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x05", id="version-only"),
        pytest.param(b"\x05\x02\x00", id="one-of-two-methods"),
        pytest.param(bytes([5, 255, *range(254)]), id="254-of-255-methods"),
    ],
)
def test_greeting_needs_more(wire: bytes) -> None:
    with pytest.raises(NeedMore):
        parse_socks5_greeting(wire)


def test_greeting_with_no_methods_answers_no_acceptable_method() -> None:
    """RFC 1928 §3: X'FF' NO ACCEPTABLE METHODS, the client then closes."""
    with pytest.raises(ProtocolError) as err:
        parse_socks5_greeting(b"\x05\x00")  # v5 NMETHODS=0
    assert err.value.reply == b"\x05\xff"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x04\x01\x00", id="socks4-version"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
        pytest.param(b"\x16\x03\x01\x02\x00", id="tls-client-hello"),
    ],
)
def test_greeting_with_wrong_version_just_closes(wire: bytes) -> None:
    """Not SOCKS5 at all: there is no SOCKS5 answer that would mean anything to the client."""
    with pytest.raises(ProtocolError) as err:
        parse_socks5_greeting(wire)
    assert err.value.reply == b""


# --- RFC 1929 username/password -------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "consumed", "creds"),
    [
        pytest.param(
            b"\x01\x05alice\x06secret",  # VER=1 ULEN=5 alice PLEN=6 secret
            14,
            Credentials("alice", "secret"),
            id="alice",
        ),
        pytest.param(
            b"\x01\x05alice\x06secret\x05\x01\x00\x01",  # then the request, pipelined
            14,
            Credentials("alice", "secret"),
            id="pipelined",
        ),
        pytest.param(
            b"\x01\x05" + "jörg".encode() + b"\x04p:ss",  # ULEN counts bytes, not characters
            12,
            Credentials("jörg", "p:ss"),
            id="utf8-username",
        ),
        pytest.param(
            b"\x01\xff" + b"u" * 255 + b"\xff" + b"p" * 255,
            513,
            Credentials("u" * 255, "p" * 255),
            id="255-bytes-each",
        ),
    ],
)
def test_auth_parses(wire: bytes, consumed: int, creds: Credentials) -> None:
    assert parse_socks5_auth(wire) == (consumed, creds)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="version-only"),
        pytest.param(b"\x01\x05ali", id="partial-username"),
        pytest.param(b"\x01\x05alice", id="no-password-length"),
        pytest.param(b"\x01\x05alice\x06secre", id="partial-password"),
    ],
)
def test_auth_needs_more(wire: bytes) -> None:
    with pytest.raises(NeedMore):
        parse_socks5_auth(wire)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x05\x05alice\x06secret", id="socks-version-instead-of-auth-version"),
        pytest.param(b"\x01\x02\xff\xfe\x01x", id="username-not-utf8"),
        pytest.param(b"\x01\x01u\x02\xc3\x28", id="password-not-utf8"),
    ],
)
def test_auth_errors_answer_failure(wire: bytes) -> None:
    """RFC 1929 §2: a non-zero STATUS (01 01) tells the client the login failed."""
    with pytest.raises(ProtocolError) as err:
        parse_socks5_auth(wire)
    assert err.value.reply == b"\x01\x01"


# --- SOCKS5 request -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "consumed", "target"),
    [
        pytest.param(
            b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",  # v5 CONNECT RSV IP4 127.0.0.1 :80
            10,
            Endpoint("127.0.0.1", 80),
            id="ipv4",
        ),
        pytest.param(
            b"\x05\x01\x00\x04"  # v5 CONNECT RSV IP6
            b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"  # 2001:db8::1
            b"\x01\xbb",  # :443
            22,
            Endpoint("2001:db8::1", 443),
            id="ipv6",
        ),
        pytest.param(
            b"\x05\x01\x00\x03\x10web.telegram.org\x01\xbb",  # v5 CONNECT RSV NAME 16 ...
            23,
            Endpoint("web.telegram.org", 443),
            id="name",
        ),
        pytest.param(
            b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50\x16\x03\x01",  # + ClientHello bytes
            10,
            Endpoint("127.0.0.1", 80),
            id="pipelined-payload",
        ),
        pytest.param(
            socks5_name_request(b"example.com") + b"GET / HTTP/1.1\r\n",
            18,
            Endpoint("example.com", 443),
            id="name-pipelined-payload",
        ),
        pytest.param(
            b"\x05\x01\x00\x01\x7f\x00\x00\x01\xff\xff",  # :65535
            10,
            Endpoint("127.0.0.1", 65535),
            id="port-65535",
        ),
        pytest.param(
            socks5_name_request(b"127.0.0.1", b"\x00\x50"),
            16,
            Endpoint("127.0.0.1", 80),
            id="ip-literal-sent-as-name",
        ),
        pytest.param(
            socks5_name_request(b"2001:DB8:0::1", b"\x00\x50"),
            20,
            Endpoint("2001:db8::1", 80),
            id="ipv6-literal-as-name-normalised",
        ),
        pytest.param(
            socks5_name_request(b"example.com."),
            19,
            Endpoint("example.com", 443),
            id="trailing-dot-dropped",
        ),
        pytest.param(
            socks5_name_request(NAME_253.encode()),
            5 + 253 + 2,
            Endpoint(NAME_253, 443),
            id="name-253-chars",
        ),
        pytest.param(
            socks5_name_request(NAME_253.encode() + b"."),
            5 + 254 + 2,
            Endpoint(NAME_253, 443),
            id="name-253-chars-plus-root-dot",
        ),
        pytest.param(
            socks5_name_request("bücher.example".encode()),
            5 + 15 + 2,
            Endpoint("bücher.example", 443),
            id="utf8-name",
        ),
        pytest.param(
            b"\x05\x01\xff\x01\x7f\x00\x00\x01\x00\x50",  # RSV not zero: ignored
            10,
            Endpoint("127.0.0.1", 80),
            id="nonzero-reserved",
        ),
    ],
)
def test_request_parses(wire: bytes, consumed: int, target: Endpoint) -> None:
    assert parse_socks5_request(wire) == (consumed, Socks5Request(0x01, target))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x05\x01\x00", id="no-atyp"),
        pytest.param(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00", id="ipv4-half-port"),
        pytest.param(b"\x05\x01\x00\x04" + b"\x00" * 16, id="ipv6-no-port"),
        pytest.param(b"\x05\x01\x00\x03", id="name-no-length"),
        pytest.param(b"\x05\x01\x00\x03\x0bexample", id="name-partial"),
        pytest.param(b"\x05\x01\x00\x03\x0bexample.com\x01", id="name-half-port"),
        pytest.param(b"\x05\x02\x00\x03\x0bexample.com", id="bind-before-address-is-complete"),
    ],
)
def test_request_needs_more(wire: bytes) -> None:
    with pytest.raises(NeedMore):
        parse_socks5_request(wire)


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        pytest.param(
            b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",  # v5 BIND ...
            REP_07,
            id="bind",
        ),
        pytest.param(socks5_name_request(b"example.com", cmd=0x09), REP_07, id="unknown-command"),
        pytest.param(socks5_name_request(b"example.com", cmd=0x00), REP_07, id="command-zero"),
        pytest.param(b"\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50", REP_08, id="atyp-2"),
        pytest.param(b"\x05\x01\x00\x05", REP_08, id="atyp-5-before-address"),
        pytest.param(b"\x05\x01\x00\xff", REP_08, id="atyp-ff"),
        pytest.param(socks5_name_request(b""), REP_01, id="empty-name"),
        pytest.param(socks5_name_request(NAME_254.encode()), REP_01, id="name-254-chars"),
        pytest.param(socks5_name_request(b"a" * 64 + b".com"), REP_01, id="label-64-chars"),
        pytest.param(socks5_name_request(b"exa\x00mple.com"), REP_01, id="name-with-nul"),
        pytest.param(socks5_name_request(b"exa mple.com"), REP_01, id="name-with-space"),
        pytest.param(socks5_name_request(b"example.com\r\n"), REP_01, id="name-with-crlf"),
        pytest.param(socks5_name_request(b"user@example.com"), REP_01, id="name-with-at"),
        pytest.param(socks5_name_request(b"example.com/x"), REP_01, id="name-with-slash"),
        pytest.param(socks5_name_request(b"a..b"), REP_01, id="empty-label"),
        pytest.param(socks5_name_request(b"."), REP_01, id="only-root-dot"),
        pytest.param(socks5_name_request(b"\xc3\x28.com"), REP_01, id="name-not-utf8"),
        pytest.param(
            b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00",  # :0
            REP_01,
            id="ipv4-port-0",
        ),
        pytest.param(socks5_name_request(b"example.com", b"\x00\x00"), REP_01, id="name-port-0"),
    ],
)
def test_request_errors_send_the_right_reply(wire: bytes, reply: bytes) -> None:
    """Each refusal carries the RFC 1928 reply code a client can act on."""
    with pytest.raises(ProtocolError) as err:
        parse_socks5_request(wire)
    assert err.value.reply == reply


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"example.com:80", id="host-and-port"),
        pytest.param(b"1::2::3", id="broken-ipv6-literal"),
    ],
)
def test_request_rejects_names_with_colon(name: bytes) -> None:
    """A ':' is in no host name; only IP literals may contain it. Accepting
    "example.com:80" as a host makes Endpoint("example.com:80", 443), which an upstream HTTP
    proxy then receives as "CONNECT [example.com:80]:443"."""
    with pytest.raises(ProtocolError) as err:
        parse_socks5_request(socks5_name_request(name))
    assert err.value.reply == REP_01


def test_request_with_wrong_version_just_closes() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_socks5_request(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
    assert err.value.reply == b""


# --- SOCKS4 and SOCKS4a -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "consumed", "expected"),
    [
        pytest.param(
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",  # v4 CONNECT :80 127.0.0.1 ""
            9,
            Socks4Request(Endpoint("127.0.0.1", 80), ""),
            id="socks4-no-user",
        ),
        pytest.param(
            b"\x04\x01\x01\xbb\x95\x9a\xa7\x33bob\x00",  # :443 149.154.167.51 "bob"
            12,
            Socks4Request(Endpoint("149.154.167.51", 443), "bob"),
            id="socks4-user",
        ),
        pytest.param(
            socks4a_request(b"web.telegram.org", b"bob"),
            8 + 4 + 17,
            Socks4Request(Endpoint("web.telegram.org", 443), "bob"),
            id="socks4a",
        ),
        pytest.param(
            b"\x04\x01\x01\xbb\x00\x00\x00\xff\x00example.com\x00",  # 0.0.0.255
            8 + 1 + 12,
            Socks4Request(Endpoint("example.com", 443), ""),
            id="socks4a-ip-0.0.0.255",
        ),
        pytest.param(
            socks4a_request(b"example.com") + b"\x16\x03\x01",
            8 + 1 + 12,
            Socks4Request(Endpoint("example.com", 443), ""),
            id="socks4a-pipelined-payload",
        ),
        pytest.param(
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00GET",
            9,
            Socks4Request(Endpoint("127.0.0.1", 80), ""),
            id="socks4-pipelined-payload",
        ),
        pytest.param(
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\xffbob\x00",  # user id is not checked as UTF-8
            13,
            Socks4Request(Endpoint("127.0.0.1", 80), "\ufffdbob"),
            id="user-id-not-utf8",
        ),
        pytest.param(
            socks4a_request(NAME_253.encode()),
            8 + 1 + 254,
            Socks4Request(Endpoint(NAME_253, 443), ""),
            id="socks4a-name-253",
        ),
    ],
)
def test_socks4_parses(wire: bytes, consumed: int, expected: Socks4Request) -> None:
    assert parse_socks4_request(wire) == (consumed, expected)


def test_socks4_ip_that_looks_like_4a_with_zero_last_byte_is_plain_socks4() -> None:
    """0.0.0.0 is not the 4a marker (that needs a non-zero last byte): no name follows."""
    consumed, request = parse_socks4_request(b"\x04\x01\x00\x50\x00\x00\x00\x00\x00example\x00")
    assert consumed == 9
    assert request.target == Endpoint("0.0.0.0", 80)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x04\x01\x00\x50\x7f\x00\x00", id="ip-partial"),
        pytest.param(b"\x04\x01\x00\x50\x7f\x00\x00\x01", id="no-user-id"),
        pytest.param(b"\x04\x01\x00\x50\x7f\x00\x00\x01bob", id="unterminated-user-id"),
        pytest.param(b"\x04\x01\x01\xbb\x00\x00\x00\x01bob", id="4a-unterminated-user-id"),
        pytest.param(b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00", id="4a-no-name"),
        pytest.param(b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com", id="4a-unterminated-name"),
    ],
)
def test_socks4_needs_more(wire: bytes) -> None:
    with pytest.raises(NeedMore):
        parse_socks4_request(wire)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", id="bind"),
        pytest.param(b"\x04\x03\x00\x50\x7f\x00\x00\x01\x00", id="unknown-command"),
        pytest.param(b"\x04\x02\x00\x50\x7f\x00\x00\x01", id="bind-rejected-before-user-id"),
        pytest.param(socks4a_request(b""), id="4a-empty-name"),
        pytest.param(socks4a_request(b"exa mple.com"), id="4a-name-with-space"),
        pytest.param(socks4a_request(b"\xc3\x28.com"), id="4a-name-not-utf8"),
        pytest.param(socks4a_request(NAME_254.encode()), id="4a-name-254"),
        pytest.param(socks4a_request(b"example.com", port=b"\x00\x00"), id="4a-port-0"),
        pytest.param(b"\x04\x01\x00\x00\x7f\x00\x00\x01\x00", id="port-0"),
    ],
)
def test_socks4_errors_answer_rejected(wire: bytes) -> None:
    """SOCKS4 has one refusal, 5B, and the client should get it rather than a bare close."""
    with pytest.raises(ProtocolError) as err:
        parse_socks4_request(wire)
    assert err.value.reply == SOCKS4_REJECTED


def test_socks4_with_wrong_version_just_closes() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_socks4_request(b"\x05\x01\x00\x50\x7f\x00\x00\x01\x00")
    assert err.value.reply == b""


@pytest.mark.parametrize(
    ("wire", "source"),
    [
        #        v5 UDP RSV IP4 0.0.0.0:0: "I do not know yet where I send from"
        pytest.param(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", ("0.0.0.0", 0), id="unknown"),
        #        v5 UDP RSV IP4 127.0.0.1:5000
        pytest.param(b"\x05\x03\x00\x01\x7f\x00\x00\x01\x13\x88", ("127.0.0.1", 5000), id="v4"),
        pytest.param(b"\x05\x03\x00\x04" + b"\x00" * 15 + b"\x01\x00\x00", ("::1", 0), id="v6"),
        # v5 UDP RSV NAME "0" port 0 (what PySocks sends): the name tells nothing
        pytest.param(b"\x05\x03\x00\x03\x010\x00\x00", ("0.0.0.0", 0), id="name"),
    ],
)
def test_udp_associate_names_the_clients_source(wire: bytes, source) -> None:
    """UDP ASSOCIATE (RFC 1928 §7): DST is where the client will send from; port 0 and the
    unspecified address are allowed there."""
    consumed, request = parse_socks5_request(wire)
    assert consumed == len(wire)
    assert request.command == 0x03
    assert (request.target.host, request.target.port) == source
