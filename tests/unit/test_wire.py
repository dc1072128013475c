"""What the wire parsers share (transports/wire.py): one NeedMore and one ProtocolError for
every parser, HTTP heads in both directions, and `host:port`."""

from __future__ import annotations

import pytest

from helper.proxy import handshake, http
from transports import websocket, wire
from transports.fronted import frames, protocol
from transports.wire import (
    HeadError,
    NeedMore,
    ProtocolError,
    format_host,
    format_hostport,
    parse_request_head,
    parse_response_head,
)


def test_every_parser_raises_the_same_two_errors() -> None:
    for module in (handshake, protocol, websocket, frames):
        assert module.NeedMore is NeedMore
    for module in (handshake, protocol, frames):
        assert module.ProtocolError is ProtocolError
    # A ValueError, as the tunnel's always was; the listeners' carry their reply.
    error = ProtocolError("no", b"reply")
    assert isinstance(error, ValueError) and error.reply == b"reply"
    assert ProtocolError("no").reply == b""
    assert issubclass(http.BadRequest, HeadError) and issubclass(HeadError, ProtocolError)


def test_host_and_port_are_written_once() -> None:
    assert format_host("example.org") == "example.org"
    assert format_host("2001:db8::1") == "[2001:db8::1]"
    assert format_hostport("192.0.2.1", 443) == "192.0.2.1:443"
    assert format_hostport("::1", 80) == "[::1]:80"


# --- request heads ----------------------------------------------------------------------------


def test_a_request_head_parses() -> None:
    head = parse_request_head(
        b"GET /a?b HTTP/1.1\r\nHost: example.org\r\nX-Two: a\r\nx-two: b\r\n\r\n"
    )
    assert (head.method, head.target, head.version) == ("GET", "/a?b", "HTTP/1.1")
    assert head.header("HOST") == "example.org"
    assert head.header("x-two") == "a" and head.header_count("X-TWO") == 2
    assert head.header("missing") is None


def test_connection_tokens_are_read_from_every_field() -> None:
    head = parse_request_head(
        b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nConnection: x\r\n\r\n"
    )
    assert head.tokens("connection") == {"keep-alive", "upgrade", "x"}
    assert head.tokens("upgrade") == set()


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "more than 100 header"),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * wire.MAX_HEAD + b"\r\n\r\n", 431, "too large"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "unsupported protocol version"),
        (b"GET / SPDY\r\n\r\n", 400, "unsupported protocol version"),
        (b"GET  / HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", 400, "malformed method"),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400, "malformed header value"),
        (b"\r\n", 400, "malformed request line"),
    ],
)
def test_a_bad_request_head_says_why_with_its_status(raw: bytes, status: int, message: str) -> None:
    with pytest.raises(HeadError, match=message) as caught:
        parse_request_head(raw)
    assert caught.value.status == status
    assert caught.value.reply == b""  # the server adds its own answer (helper/proxy/http.py)


def test_the_proxy_adds_its_error_response() -> None:
    with pytest.raises(http.BadRequest) as caught:
        http.parse_head(b"GET / HTTP/2.0\r\n\r\n")
    assert caught.value.status == 505
    assert caught.value.reply.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")


# --- response heads ---------------------------------------------------------------------------


def test_a_response_head_parses_leniently() -> None:
    head = parse_response_head(
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b"Proxy-Authenticate: Basic\r\nno field here\r\nContent-Length:  12 \r\n\r\n"
    )
    assert (head.version, head.status, head.reason) == (
        "HTTP/1.1",
        407,
        "Proxy Authentication Required",
    )
    assert head.headers == [("Proxy-Authenticate", "Basic"), ("Content-Length", "12")]
    assert head.content_length == 12
    assert parse_response_head(b"HTTP/1.0 200\r\n\r\n").reason == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 \xb200 OK\r\n\r\n",  # a digit to isdigit(), not to int()
        b"HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_what_is_no_http_response(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(raw)


@pytest.mark.parametrize("value", ["", "-1", "1e3", "١٢", "9" * 19, "1, 2"])
def test_a_content_length_that_is_no_number_is_none(value: str) -> None:
    raw = f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n".encode()
    assert parse_response_head(raw).content_length is None
