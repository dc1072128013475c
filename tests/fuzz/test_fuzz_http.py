"""Property tests for the HTTP request parsers: the proxy's (request heads come from anyone
who can connect, and an absolute-form request's head is rewritten and sent on to an origin),
and the status API server's, which shares its head parser and takes origin-form targets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helper.config import parse_config
from helper.engine import Engine
from helper.http_server import HttpServer, request_from_head
from helper.proxy.handshake import ProtocolError
from helper.proxy.http import (
    REASONS,
    BadRequest,
    HttpRequest,
    check_basic_auth,
    forwarded_head,
    parse_head,
    parse_request_head,
)
from helper.proxy.limits import ThrottledLog
from tests.conftest import config_text
from tests.fuzz.strategies import _server_head, auth_values, request_heads
from tests.unit.scripted import ScriptedStream
from transports import Endpoint


def parse_or_error(head: bytes) -> HttpRequest | None:
    """The parsed request, or None after checking the ProtocolError carries a complete,
    closing HTTP error response."""
    try:
        return parse_request_head(head)
    except ProtocolError as exc:
        reply = exc.reply
        assert isinstance(reply, bytes)
        response_head, sep, body = reply.partition(b"\r\n\r\n")
        assert sep, "the error response has a complete head"
        lines = response_head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        assert lines[0] == f"HTTP/1.1 {status} {REASONS[status]}".encode()
        assert 400 <= status < 600
        assert f"Content-Length: {len(body)}".encode() in lines
        assert b"Connection: close" in lines
        return None


def _prop_any_head_parses_or_gets_an_http_error(head: bytes) -> None:
    """Any head (ending in CRLF CRLF, as the listener reads it) is a request or a complete
    HTTP error response; and whatever the client sent, the head detour sends on to an origin
    is one request: a request line of three parts, header lines without CR or LF, one blank
    line at the end, exactly one Host naming the destination detour dialed, and no
    hop-by-hop credentials."""
    request = parse_or_error(head)
    if request is None:
        return
    assert 0 < request.destination.port < 65536
    # The resolver encodes a name in IDNA (getaddrinfo): one that cannot be is refused here,
    # as a 400 (a UTF-8 name read as latin-1 ended in an internal error there).
    request.destination.host.encode("idna")
    assert request.version in ("HTTP/1.1", "HTTP/1.0")
    assert all(name and ":" not in name for name, _ in request.headers)
    assert all(not set(value) & {"\r", "\n", "\0"} for _, value in request.headers)
    if not request.is_connect:
        check_forwarded(request)


def check_forwarded(request: HttpRequest) -> None:
    out = forwarded_head(request)
    assert out.endswith(b"\r\n\r\n")
    lines = out[:-4].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    method, path, version = lines[0].split(b" ")
    assert method.decode() == request.method
    assert version.decode() == request.version
    assert path.startswith(b"/")
    fields = [line.split(b":", 1) for line in lines[1:]]
    assert all(len(f) == 2 and f[0] and b" " not in f[0] for f in fields)
    names = [f[0].lower() for f in fields]
    assert names.count(b"host") == 1
    assert names.count(b"connection") == 1
    assert b"proxy-authorization" not in names
    assert b"proxy-connection" not in names
    host = next(v.strip() for n, v in fields if n.lower() == b"host").decode("latin-1")
    dest = request.destination
    name = dest.host if dest.host.isascii() else dest.host.encode("idna").decode()
    shown = f"[{name}]" if ":" in name else name
    assert host in (shown, f"{shown}:{dest.port}")


def _prop_check_basic_auth_never_raises(value: str) -> None:
    """Proxy-Authorization is client input decoded as latin-1: whatever it holds, the answer
    is credentials or None (then 407), never an exception."""
    request = HttpRequest(
        "CONNECT",
        "example.com:443",
        "HTTP/1.1",
        [("Proxy-Authorization", value)],
        Endpoint("example.com", 443),
    )
    creds = check_basic_auth(request)
    assert creds is None or (isinstance(creds[0], str) and isinstance(creds[1], str))


# --- the status API's server ----------------------------------------------------------------

API_TOKEN = "fuzz-token-0123456789abcdef"
PEERS = [("127.0.0.1", 40000), ("::1", 40000), ("192.168.1.23", 40000), ("fe80::1%eth0", 1)]


class ClientStream(ScriptedStream):
    """A scripted client connection with the addresses a socket has."""

    def __init__(self, chunks: list[bytes], peer: tuple[str, int]) -> None:
        super().__init__(chunks)
        self.extra = {"peername": peer, "sockname": ("192.168.1.1", 9080)}

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.extra.get(name, default)


def check_response(wire: bytes, *, head_only: bool) -> tuple[int, dict[str, str]]:
    """A complete, closing HTTP/1.1 response, no header field twice, Cache-Control:
    no-store, and a Content-Length that is its body's (HEAD: the headers only)."""
    head, sep, body = wire.partition(b"\r\n\r\n")
    assert sep, "the response has a complete head"
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1" and reason == REASONS[int(status)]
    fields = [line.split(": ", 1) for line in lines[1:]]
    assert all(len(field) == 2 and field[0] and "\r" not in field[1] for field in fields)
    headers = {name.lower(): value for name, value in fields}
    assert len(headers) == len(fields)
    assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
    if head_only:
        assert body == b""
    else:
        assert int(headers["content-length"]) == len(body)
    return int(status), headers


@pytest.fixture(scope="module")
def api_server() -> Iterator[tuple[asyncio.AbstractEventLoop, HttpServer]]:
    """The status API's server and handler on an engine that is not started (no socket is
    opened: requests come from scripted streams), with a token and a public PAC."""
    extra = f"""
    [api]
    listen = "0.0.0.0:9080"
    token = "{API_TOKEN}"
    public = ["/proxy.pac"]

    [[service]]
    name = "echo"
    domains = ["echo.test"]
    cidrs = ["192.0.2.0/24"]
    """
    engine = Engine(parse_config(config_text(extra=extra)))
    assert engine.api is not None
    # Refusals go to a logger of the test's own, unthrottled: each example's line is checked.
    refusals = logging.getLogger("tests.fuzz.api_refusals")
    refusals.propagate, refusals.level = False, logging.DEBUG
    refusals.handlers = [_Lines()]
    engine.api.throttled = ThrottledLog(refusals, burst=10**9)
    server = HttpServer(
        engine.api.handle, "0.0.0.0", 9080, headers=(("Cache-Control", "no-store"),)
    )
    loop = asyncio.new_event_loop()
    yield loop, server
    loop.close()


class _Lines(logging.Handler):
    """The messages logged, kept for the example that logged them."""

    lines: ClassVar[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        _Lines.lines.append(record.getMessage())


def _api_case(raw: bytes) -> tuple[bytes, tuple[str, int], bool, int]:
    """A head as strategies.server_heads makes it, and from 3 bytes before it: the peer,
    whether the token is added, and the size of the pieces it comes in (a quarter of the
    time 1 to 8 bytes, else 1 to 400): one draw instead of four."""
    b0, b1, b2 = raw[:3]
    chunk = 1 + b1 % 8 if b1 < 64 else 1 + (b1 << 8 | b2) % 400
    return _server_head(raw[3:]), PEERS[b0 % len(PEERS)], bool(b0 & 4), chunk


def _prop_any_request_to_the_status_api_gets_an_http_answer(
    api_server: tuple[asyncio.AbstractEventLoop, HttpServer],
    case: tuple[bytes, tuple[str, int], bool, int],
) -> None:
    """Whatever a client sends the status API (in pieces of any size), the answer is one
    complete HTTP response: an error that says why, or the endpoint's answer -- never a 500
    (a bug), and never an endpoint other than the public PAC to a client from elsewhere
    without the token."""
    loop, server = api_server
    head, peer, with_token, chunk = case
    if with_token:
        line = f"\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n".encode()
        head = head.removesuffix(b"\r\n\r\n") + line
    stream = ClientStream([head[i : i + chunk] for i in range(0, len(head), chunk)], peer)
    _Lines.lines.clear()
    wire = loop.run_until_complete(server.answer(stream))
    assert wire is not None  # the head is complete: it gets an answer
    # The server reads up to the first blank line: what follows is a body, or junk.
    read = head[: head.index(b"\r\n\r\n") + 4]
    try:
        request = request_from_head(parse_head(read))
    except BadRequest:
        request = None
    head_only = request is not None and request.method == "HEAD"
    status, headers = check_response(wire, head_only=head_only)
    assert status != 500, wire
    if request is None:
        assert 400 <= status < 500 or status == 505
        return
    assert request.path.startswith("/")
    if request.header_count("Authorization") > 1:  # two logins: neither is taken
        assert status == 400 and len(_Lines.lines) == 1, (wire, _Lines.lines)
        return
    assert status in (200, 401, 404, 405, 503), wire
    if status in (200, 503) and request.path != "/proxy.pac":
        assert peer[0] in ("127.0.0.1", "::1") or with_token
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    if status == 401:
        assert headers["www-authenticate"] == 'Bearer realm="detour"'
    # A refused request is one log line of its own (an escaped path cannot start another),
    # without the token; what is served is not logged.
    if status in (401, 404, 405):
        assert len(_Lines.lines) == 1, _Lines.lines
        line = _Lines.lines[0]
        assert "\n" not in line and "\r" not in line and API_TOKEN not in line, line
    else:
        assert _Lines.lines == [], _Lines.lines


# --- the properties above, in one test ------------------------------------------------------
#
# Hypothesis' own work for an example costs more than most of these checks, and CI runs
# 10,000 examples of each test: the proxy's and the status API's request properties share a
# test, and so hypothesis' work, each with its own input drawn as it was when it had a test of
# its own (the status API's on the module's server and loop, as before).


@given(
    head=request_heads,
    auth=auth_values,
    api_case=st.binary(min_size=303, max_size=303).map(_api_case),
)
def test_proxy_heads_basic_auth_and_status_api_requests(
    api_server: tuple[asyncio.AbstractEventLoop, HttpServer],
    head: bytes,
    auth: str,
    api_case: tuple[bytes, tuple[str, int], bool, int],
) -> None:
    _prop_any_head_parses_or_gets_an_http_error(head)
    _prop_check_basic_auth_never_raises(auth)
    _prop_any_request_to_the_status_api_gets_an_http_answer(api_server, api_case)
