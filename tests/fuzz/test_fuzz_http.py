"""Property tests for the HTTP proxy request parser: request heads come from anyone who can
connect, and an absolute-form request's head is rewritten and sent on to an origin."""

from __future__ import annotations

from hypothesis import given

from helper.proxy.handshake import ProtocolError
from helper.proxy.http import (
    REASONS,
    HttpRequest,
    check_basic_auth,
    forwarded_head,
    parse_request_head,
)
from tests.fuzz.strategies import auth_values, request_heads
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


@given(request_heads)
def test_any_head_parses_or_gets_an_http_error(head: bytes) -> None:
    """Any head (ending in CRLF CRLF, as the listener reads it) is a request or a complete
    HTTP error response; and whatever the client sent, the head detour sends on to an origin
    is one request: a request line of three parts, header lines without CR or LF, one blank
    line at the end, exactly one Host naming the destination detour dialed, and no
    hop-by-hop credentials."""
    request = parse_or_error(head)
    if request is None:
        return
    assert 0 < request.destination.port < 65536
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
    shown = f"[{dest.host}]" if ":" in dest.host else dest.host
    assert host in (shown, f"{shown}:{dest.port}")


@given(auth_values)
def test_check_basic_auth_never_raises(value: str) -> None:
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
