"""HTTP proxy requests, server side (RFC 9110, RFC 9112): parse a request head, decide the
destination, rewrite absolute-form requests for the origin, and build detour's answers.

Two kinds of request are served:
- `CONNECT host:port` opens a tunnel (HTTPS and anything else);
- absolute-form `GET http://host/path` is forwarded as one request: hop-by-hop headers
  are dropped, the request line becomes origin-form, and `Connection: close` makes the
  origin end the exchange, after which the bytes flow through untouched.

The generic half, `parse_head` (request line, header fields, limits: transports/wire.py, with
detour's error response added), is shared with the status API's and the relay's server
(helper/http_server.py), which take origin-form targets instead (`origin_target`);
`parse_request_head` adds the proxy's target handling.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from transports import Endpoint, wire
from transports.wire import MAX_HEAD, MAX_HEADERS, REASONS, HeadError, RequestHead, format_host

from .handshake import destination

__all__ = [
    "AUTH_REQUIRED",
    "CONNECT_ESTABLISHED",
    "MAX_HEAD",
    "MAX_HEADERS",
    "REASONS",
    "REQUEST_TIMEOUT",
    "BadRequest",
    "HttpRequest",
    "RequestHead",
    "check_basic_auth",
    "error_response",
    "forwarded_head",
    "origin_target",
    "parse_head",
    "parse_request_head",
]

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard Proxy-Connection.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
}


@dataclass(frozen=True)
class HttpRequest(RequestHead):
    """A proxy request: `target` is authority-form for CONNECT, absolute-form otherwise."""

    destination: Endpoint
    path: str = ""  # origin-form path for forwarded requests

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"


class BadRequest(HeadError):
    """A request head we cannot accept: `status` is the HTTP status that says why, and
    `reply` detour's complete error response with it (the proxy sends that one)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status, error_response(status, message))


def error_response(status: int, message: str, extra_headers: str = "") -> bytes:
    """A complete, closing HTTP response with a one-line plain-text body."""
    body = f"detour: {message}\n".encode("utf-8", "replace")
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"{extra_headers}"
        "\r\n"
    ).encode("latin-1") + body


CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
REQUEST_TIMEOUT = error_response(408, "the request head did not arrive in time")
AUTH_REQUIRED = error_response(
    407, "proxy authentication required", 'Proxy-Authenticate: Basic realm="detour"\r\n'
)


def _bad(message: str, status: int = 400) -> BadRequest:
    return BadRequest(message, status)


def parse_head(head: bytes) -> RequestHead:
    """Parse a request head ending in CRLF CRLF (as read by a listener): the request line and
    the header fields, without looking at the target (transports/wire.py). Raises
    BadRequest, which carries detour's error response."""
    try:
        return wire.parse_request_head(head)
    except HeadError as exc:
        raise BadRequest(str(exc), exc.status) from None


def parse_request_head(head: bytes) -> HttpRequest:
    """Parse a proxy request head ending in CRLF CRLF (as read by the listener): CONNECT
    with an authority, or an absolute-form http:// request whose body's framing is clear
    (RFC 9112 §6.3, `wire.body_length`: 400 for both framings, Content-Length twice or not
    a number; 501 for a transfer coding other than chunked), as the origin must not read it
    otherwise than detour passes it on. Lines end in CRLF: a bare LF (which RFC 9112 §2.2
    lets a recipient accept) is refused, 400."""
    if head.count(b"\n") != head.count(b"\r\n"):
        raise _bad("a line ends in a bare LF: request lines must end in CRLF")
    request = parse_head(head)
    method, target, version, headers = (
        request.method,
        request.target,
        request.version,
        request.headers,
    )
    if method == "CONNECT":
        return HttpRequest(method, target, version, headers, _authority(target, None))
    if target.startswith("/") or target == "*":
        raise _bad("this is a proxy: send absolute-form requests (http://host/path) or CONNECT")
    try:
        url = urlsplit(target)
    except ValueError:
        raise _bad("malformed request target") from None
    scheme = url.scheme.lower()
    if scheme == "https":
        raise _bad("use CONNECT for https:// through a proxy")
    if scheme != "http":
        raise _bad("only http:// targets and CONNECT are supported", 501 if scheme else 400)
    if not url.netloc:
        raise _bad("the request target has no host")
    if "@" in url.netloc:
        raise _bad("credentials in the request target are not forwarded")
    try:
        wire.body_length(request)
    except HeadError as exc:
        raise _bad(str(exc), exc.status) from None
    dest = _authority(url.netloc, 80)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    return HttpRequest(method, target, version, headers, dest, path)


def _authority(text: str, default_port: int | None) -> Endpoint:
    if not text.isascii():  # the head was read as latin-1: a name in UTF-8, as clients send
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("the destination's host name is not UTF-8") from None
    try:
        endpoint = Endpoint.parse(text, default_port)
        return destination(endpoint.host, endpoint.port)
    except ValueError as exc:
        raise _bad(f"bad destination {text[:64]!r}: {exc}") from None


def check_basic_auth(request: HttpRequest) -> tuple[str, str] | None:
    """The (username, password) of a Proxy-Authorization: Basic header, if well-formed."""
    value = request.header("proxy-authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, non-ASCII input, UnicodeDecodeError
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def forwarded_head(request: HttpRequest) -> bytes:
    """The head to send to the origin for an absolute-form request."""
    connection_tokens: set[str] = set()
    for name, value in request.headers:
        if name.lower() in ("connection", "proxy-connection"):
            connection_tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    upgrade = "upgrade" in connection_tokens and request.header("upgrade") is not None
    lines = [f"{request.method} {request.path} {request.version}"]
    has_host = False
    for name, value in request.headers:
        key = name.lower()
        if key in _HOP_BY_HOP or key in connection_tokens:
            continue
        if key == "host":
            if has_host:
                continue
            has_host = True
            value = _host_header(request.destination)
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {_host_header(request.destination)}")
    if upgrade:
        lines.append(f"Upgrade: {request.header('upgrade')}")
        lines.append("Connection: Upgrade")
    else:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _host_header(dest: Endpoint) -> str:
    if not dest.host.isascii():  # an international name (destination() checked it encodes)
        dest = Endpoint(dest.host.encode("idna").decode("ascii"), dest.port)
    return format_host(dest.host) if dest.port == 80 else str(dest)


def origin_target(request: RequestHead) -> tuple[str, str, str | None]:
    """Where a request to a server (not a proxy) points: (path, query, authority). The
    target is origin-form (`/status?x`, RFC 9112 §3.2.1), or absolute-form
    (`http://host:port/status`, which a server must accept too, §3.2.2; its authority then
    stands for the Host header). The path comes percent-decoded. Raises BadRequest."""
    target = request.target
    if not target or any(not 0x21 <= ord(c) <= 0x7E for c in target):
        raise _bad("malformed request target")
    if target.startswith("/"):
        raw_path, _, query = target.partition("?")
        return unquote(raw_path), query, None
    if not target[:8].lower().startswith(("http://", "https://")):
        raise _bad("the request target must be a path (/status) or an http:// URL")
    try:
        url = urlsplit(target)
    except ValueError:
        raise _bad("malformed request target") from None
    if not url.netloc or "@" in url.netloc:
        raise _bad("the request target's host is missing or malformed")
    return unquote(url.path or "/"), url.query, url.netloc
