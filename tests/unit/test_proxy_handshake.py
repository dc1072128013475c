"""What the inbound parsers share (helper/proxy/handshake.py): the checks on a destination a
client names, and read_message, which feeds a parser until it accepts a prefix and hands the
bytes after it back to the stream."""

from __future__ import annotations

import ipaddress

import pytest

from helper.proxy.handshake import NeedMore, ProtocolError, destination, read_message
from helper.proxy.socks import (
    SOCKS4_REQUEST_LIMIT,
    SOCKS5_GREETING_LIMIT,
    SOCKS5_REQUEST_LIMIT,
    Socks5Greeting,
    Socks5Request,
    parse_socks4_request,
    parse_socks5_greeting,
    parse_socks5_request,
)
from tests.unit.scripted import ScriptedStream
from transports import Endpoint

# --- destination --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param("example.com", 443, Endpoint("example.com", 443), id="name"),
        pytest.param("example.com.", 443, Endpoint("example.com", 443), id="root-dot-dropped"),
        pytest.param("localhost", 1, Endpoint("localhost", 1), id="single-label-port-1"),
        pytest.param("_srv.example", 65535, Endpoint("_srv.example", 65535), id="underscore"),
        pytest.param("xn--bcher-kva.example", 80, Endpoint("xn--bcher-kva.example", 80), id="idna"),
        pytest.param("bücher.example", 80, Endpoint("bücher.example", 80), id="unicode"),
        pytest.param("10.0.0.1", 80, Endpoint("10.0.0.1", 80), id="ipv4"),
        pytest.param("::1", 80, Endpoint("::1", 80), id="ipv6"),
        pytest.param("2001:DB8:0:0::1", 80, Endpoint("2001:db8::1", 80), id="ipv6-normalised"),
        pytest.param("a" * 63 + ".com", 80, Endpoint("a" * 63 + ".com", 80), id="label-63"),
    ],
)
def test_destination_accepts(host: str, port: int, expected: Endpoint) -> None:
    assert destination(host, port) == expected


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        pytest.param("example.com", 0, "port 0", id="port-0"),
        pytest.param("example.com", 65536, "port 65536", id="port-65536"),
        pytest.param("example.com", -1, "port -1", id="port-negative"),
        pytest.param("", 80, "empty host", id="empty"),
        pytest.param(".", 80, "at most 253", id="root-only"),
        pytest.param("a" * 254, 80, "254 characters", id="254-chars"),
        pytest.param("a" * 64 + ".com", 80, "label", id="label-64"),
        pytest.param("a..com", 80, "label", id="empty-label"),
        pytest.param(".example.com", 80, "label", id="leading-dot"),
        pytest.param("exa mple.com", 80, "characters", id="space"),
        pytest.param("exa\x00mple.com", 80, "characters", id="nul"),
        pytest.param("exa\tmple.com", 80, "characters", id="tab"),
        pytest.param("exa\x7fmple.com", 80, "characters", id="del"),
        pytest.param("example.com/path", 80, "characters", id="slash"),
        pytest.param("example.com\\x", 80, "characters", id="backslash"),
        pytest.param("user@example.com", 80, "characters", id="at"),
        pytest.param("[::1]", 80, "characters", id="brackets"),
    ],
)
def test_destination_rejects(host: str, port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        destination(host, port)


def test_destination_keeps_ipv4_mapped_addresses_as_ipv6() -> None:
    # (str() of a mapped address differs between Python 3.11 and 3.13: compare addresses.)
    target = destination("::ffff:149.154.167.51", 80)
    assert target.ip == ipaddress.ip_address("::ffff:149.154.167.51")


def test_destination_accepts_253_and_rejects_254_characters() -> None:
    name_253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert destination(name_253, 80).host == name_253
    assert destination(name_253 + ".", 80).host == name_253
    with pytest.raises(ValueError, match="at most 253"):
        destination(name_253 + "d", 80)


# --- read_message -------------------------------------------------------------------------

GREETING = b"\x05\x01\x00"  # v5 NMETHODS=1 NOAUTH
REQUEST = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"  # v5 CONNECT RSV NAME 11 example.com :443
TARGET = Endpoint("example.com", 443)


async def test_read_message_whole_message_in_one_chunk() -> None:
    stream = ScriptedStream([GREETING])
    greeting = await read_message(stream, parse_socks5_greeting, SOCKS5_GREETING_LIMIT)
    assert greeting == Socks5Greeting(frozenset({0}))
    assert stream.unread_calls == []


async def test_read_message_one_byte_at_a_time() -> None:
    stream = ScriptedStream([bytes([b]) for b in REQUEST])
    request = await read_message(stream, parse_socks5_request, SOCKS5_REQUEST_LIMIT)
    assert request == Socks5Request(1, TARGET)
    assert stream.unread_calls == []
    assert len(stream.read_sizes) == len(REQUEST)


async def test_read_message_puts_pipelined_bytes_back() -> None:
    """A client that sends greeting and request in one segment (curl does) must not lose the
    request: the bytes after the greeting are unread for the next parser."""
    stream = ScriptedStream([GREETING + REQUEST[:5], REQUEST[5:] + b"\x16\x03\x01"])
    greeting = await read_message(stream, parse_socks5_greeting, SOCKS5_GREETING_LIMIT)
    assert greeting == Socks5Greeting(frozenset({0}))
    assert stream.unread_calls == [REQUEST[:5]]
    request = await read_message(stream, parse_socks5_request, SOCKS5_REQUEST_LIMIT)
    assert request == Socks5Request(1, TARGET)
    assert stream.unread_calls == [REQUEST[:5], b"\x16\x03\x01"]
    assert stream.remaining() == b"\x16\x03\x01"


async def test_read_message_never_reads_past_the_limit() -> None:
    stream = ScriptedStream([REQUEST])
    await read_message(stream, parse_socks5_request, SOCKS5_REQUEST_LIMIT)
    assert stream.read_sizes == [SOCKS5_REQUEST_LIMIT]
    assert stream.remaining() == b""


async def test_read_message_over_limit_is_a_protocol_error() -> None:
    """A SOCKS4 user id that never ends must not grow the buffer without bound."""
    endless = b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 2000
    stream = ScriptedStream([endless[i : i + 100] for i in range(0, len(endless), 100)])
    with pytest.raises(ProtocolError, match=f"longer than {SOCKS4_REQUEST_LIMIT}"):
        await read_message(stream, parse_socks4_request, SOCKS4_REQUEST_LIMIT)
    assert sum(min(n, 100) for n in stream.read_sizes) <= SOCKS4_REQUEST_LIMIT
    assert max(stream.read_sizes) <= SOCKS4_REQUEST_LIMIT


async def test_read_message_eof_mid_message() -> None:
    stream = ScriptedStream([REQUEST[:7]])
    with pytest.raises(ProtocolError, match="closed the connection mid-handshake") as err:
        await read_message(stream, parse_socks5_request, SOCKS5_REQUEST_LIMIT)
    assert err.value.reply == b""


async def test_read_message_eof_before_anything() -> None:
    with pytest.raises(ProtocolError, match="mid-handshake"):
        await read_message(ScriptedStream([]), parse_socks5_greeting, SOCKS5_GREETING_LIMIT)


async def test_read_message_passes_the_parsers_error_reply_through() -> None:
    stream = ScriptedStream([b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50"])  # v5 BIND ...
    with pytest.raises(ProtocolError) as err:
        await read_message(stream, parse_socks5_request, SOCKS5_REQUEST_LIMIT)
    assert err.value.reply[:2] == b"\x05\x07"


async def test_read_message_with_a_parser_that_takes_nothing() -> None:
    """A parser may accept without consuming (a peek): all bytes go back."""

    def peek(buf: bytes) -> tuple[int, bytes]:
        if len(buf) < 2:
            raise NeedMore
        return 0, buf[:2]

    stream = ScriptedStream([b"\x05", b"\x01\x00"])
    assert await read_message(stream, peek, 10) == b"\x05\x01"
    assert stream.unread_calls == [b"\x05\x01\x00"]
