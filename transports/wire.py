"""What detour's wire parsers share: the two exceptions every sans-IO parser raises, HTTP/1.1
message heads (RFC 9112), and `host:port` as URLs and logs write it.

Every parser of untrusted bytes in detour (SOCKS, HTTP, the tunnel's messages and frames,
WebSocket frames) is a function over bytes that returns `(bytes consumed, message)`, raises
NeedMore when the bytes end inside a message (read more, parse again), or raises
ProtocolError when they cannot be one. The error's `reply` is the protocol's own answer to
send before closing (a SOCKS failure reply, an HTTP error response), when it has one.

HTTP heads are parsed here once, for both directions:

    request head   METHOD SP target SP HTTP/1.x CRLF  (name: value CRLF)*  CRLF
    response head  HTTP/1.x SP 3DIGIT [SP reason] CRLF  (name: value CRLF)*  CRLF

A request head (the proxy's, the status API's, the relay's) is checked strictly: a server
must refuse what it cannot read unambiguously (HeadError carries the status that says why).
A response head (an upstream proxy's answer to CONNECT, a WebSocket upgrade's answer, a
probed web server's) is read leniently: a client takes the status line and the fields it
understands and skips lines that are no field.

This module is a leaf: it imports nothing from detour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "REASONS",
    "ChunkedBody",
    "HeadError",
    "NeedMore",
    "ProtocolError",
    "RequestHead",
    "ResponseHead",
    "body_length",
    "check_method",
    "check_request_line",
    "format_host",
    "format_hostport",
    "parse_request_head",
    "parse_response_head",
    "request_line_parts",
]

MAX_HEAD = 32 * 1024  # a request head, request line and fields, at most
MAX_HEADERS = 100  # header fields in a request head, at most

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    414: "Request-URI Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

_TOKEN_CHARS = frozenset(  # RFC 9110 §5.6.2 tchar
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class NeedMore(Exception):
    """The bytes given end inside a message: read more and parse again."""


class ProtocolError(ValueError):
    """The bytes break the protocol. `reply` is the protocol's error answer (bytes to send
    before closing), or b"" to just close. `logged`: whoever raised it logged it already (a
    failed login, through the admission's throttled log), so the server does not again."""

    def __init__(self, message: str, reply: bytes = b"", *, logged: bool = False) -> None:
        super().__init__(message)
        self.reply = reply
        self.logged = logged


class HeadError(ProtocolError):
    """A request head a server must refuse; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400, reply: bytes = b"") -> None:
        super().__init__(message, reply)
        self.status = status


def format_host(host: str) -> str:
    """A host as URLs and Host headers write it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def format_hostport(host: str, port: int) -> str:
    """`host:port`, `[v6]:port`."""
    return f"{format_host(host)}:{port}"


class _Fields:
    """What requests and responses share: looking up their header fields."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first field of that name (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_count(self, name: str) -> int:
        name = name.lower()
        return sum(1 for key, _ in self.headers if key.lower() == name)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every field of that name, lower-cased (Connection,
        Upgrade)."""
        name = name.lower()
        return {
            token.strip().lower()
            for key, value in self.headers
            if key.lower() == name
            for token in value.split(",")
            if token.strip()
        }


@dataclass(frozen=True)
class RequestHead(_Fields):
    """A request line and its header fields, checked for syntax only (RFC 9112 §3, §5)."""

    method: str
    target: str  # as sent
    version: str
    headers: list[tuple[str, str]]


def _lines(head: bytes, *, lenient: bool = False) -> list[str]:
    """The lines of a head ending in CRLF CRLF (latin-1 decodes every byte). `lenient`, as
    web servers read a request: a bare LF ends a line too (RFC 9112 §2.2 allows it)."""
    if lenient:
        lines = [line.removesuffix("\r") for line in head.decode("latin-1").split("\n")]
    else:
        lines = head.decode("latin-1").split("\r\n")
    if lines[-2:] == ["", ""]:
        lines = lines[:-2]
    return lines


def request_line_parts(line: str, *, lenient: bool = False) -> list[str]:
    """A request line split at its spaces; `lenient`: runs of spaces count as one."""
    parts = line.split(" ")
    return [part for part in parts if part] if lenient else parts


def check_request_line(line: str, *, lenient: bool = False) -> tuple[str, str, str]:
    """(method, target, version) of a request line, or HeadError. Strictly, one space
    between the parts and HTTP/1.0 or HTTP/1.1 (what detour's own servers speak). `lenient`,
    as web servers read it: runs of spaces, and HTTP/1.2 and later minor versions read as
    HTTP/1.1 (RFC 9110 §2.5)."""
    parts = request_line_parts(line, lenient=lenient)
    if len(parts) != 3:
        raise HeadError("malformed request line")
    method, target, version = parts
    check_method(method)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        minor = version[7:]
        if lenient and version.startswith("HTTP/1.") and minor.isascii() and minor.isdigit():
            version = "HTTP/1.1"
        else:
            status = 505 if version.startswith("HTTP/") else 400
            raise HeadError(f"unsupported protocol version {version[:16]!r}", status)
    return method, target, version


def check_method(method: str) -> None:
    """HeadError unless `method` is a token (RFC 9110 §9.1); a prefix of one passes too
    while it is being read (not empty then)."""
    if not method or not all(ord(c) in _TOKEN_CHARS for c in method):
        raise HeadError("malformed method")


def parse_request_head(head: bytes, *, lenient: bool = False) -> RequestHead:
    """Parse a request head ending in CRLF CRLF (as a server reads it): the request line and
    the header fields, without looking at the target. Raises HeadError. `lenient`: as in
    check_request_line."""
    if len(head) > MAX_HEAD:
        raise HeadError("request head too large", 431)
    lines = _lines(head, lenient=lenient)
    if not lines:  # b'\r\n': not a head a server reads, but no IndexError either
        raise HeadError("malformed request line")
    request_line, header_lines = lines[0], lines[1:]
    method, target, version = check_request_line(request_line, lenient=lenient)
    if len(header_lines) > MAX_HEADERS:
        raise HeadError(f"more than {MAX_HEADERS} header fields", 431)
    headers: list[tuple[str, str]] = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or not all(ord(c) in _TOKEN_CHARS for c in name):
            # RFC 9112 §5.1: no whitespace between field name and colon; obs-fold rejected.
            raise HeadError("malformed header field")
        value = value.strip(" \t")
        if any(c in value for c in "\r\n\0"):
            raise HeadError("malformed header value")
        headers.append((name, value))
    return RequestHead(method, target, version, headers)


@dataclass(frozen=True)
class ResponseHead(_Fields):
    """A status line and the header fields that parse (RFC 9112 §4)."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]

    @property
    def content_length(self) -> int | None:
        """Content-Length when it is one number (at most 18 digits), else None."""
        value = self.header("content-length")
        if value is None or not (value.isascii() and value.isdigit()) or len(value) > 18:
            return None
        return int(value)


_RESPONSE_VERSION = re.compile(r"HTTP/1\.[0-9]")


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head ending in CRLF CRLF. Raises ProtocolError when the status line is
    not `HTTP/1.x` and a three-digit status; lines that are no header field are skipped."""
    lines = _lines(head)
    parts = lines[0].split(" ", 2) if lines else []
    if len(parts) < 2 or not _RESPONSE_VERSION.fullmatch(parts[0]):
        raise ProtocolError("not an HTTP response")
    version, code = parts[0], parts[1]
    # isascii: '\xb2' (superscript two) is a digit to isdigit() but not to int(). A status
    # is 100 to 999 (RFC 9110 §15: three digits, the first says the class): "000" is none.
    if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] == "0":
        raise ProtocolError("not an HTTP status")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), value.strip(" \t")))
    return ResponseHead(version, int(code), parts[2] if len(parts) > 2 else "", headers)


def body_length(request: RequestHead) -> int | None:
    """How a request's body is delimited (RFC 9112 §6.3): its length in bytes (0: there is
    none), or None when it is chunked. HeadError(400) when it cannot be told for sure: both
    framings, Content-Length twice or not a number; HeadError(501) for a transfer coding
    other than chunked (§6.1: none is understood here)."""
    codings = [
        token.strip().lower()
        for name, value in request.headers
        if name.lower() == "transfer-encoding"
        for token in value.split(",")
    ]
    lengths = [value for name, value in request.headers if name.lower() == "content-length"]
    if codings:
        if lengths:
            raise HeadError("both Transfer-Encoding and Content-Length")
        if any(coding != "chunked" for coding in codings):
            raise HeadError("a transfer coding other than chunked", 501)
        if len(codings) > 1:
            raise HeadError("chunked twice")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise HeadError("more than one Content-Length")
    value = lengths[0]
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise HeadError("malformed Content-Length")
    return int(value)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class ChunkedBody:
    """Where a chunked body ends (RFC 9112 §7.1), found without keeping the body: `feed` it
    bytes as they come; it returns how many of them belong to the body, and `done` is True
    once the last chunk and the trailer section have passed (the bytes after are the next
    message's). Raises ProtocolError for what is no chunked body. Chunk extensions and
    trailer fields are skipped; lines may end in CRLF or LF, as servers accept."""

    MAX_LINE = 4096  # a chunk-size line (extensions included) or a trailer field

    def __init__(self) -> None:
        self._state = "size"  # size, data, data-end, trailer
        self._line = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self.size = 0  # payload bytes passed so far
        self.done = False

    def feed(self, data: bytes | bytearray) -> int:
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == "data":
                take = min(self._left, end - pos)
                pos += take
                self._left -= take
                self.size += take
                if not self._left:
                    self._state = "data-end"
                continue
            newline = data.find(b"\n", pos)
            stop = newline if newline >= 0 else end
            if len(self._line) + stop - pos > self.MAX_LINE:
                raise ProtocolError("a chunk line too long")
            self._line += data[pos:stop]
            if newline < 0:
                return end
            pos = newline + 1
            line = bytes(self._line[:-1] if self._line.endswith(b"\r") else self._line)
            self._line.clear()
            self._line_ended(line)
        return pos

    def _line_ended(self, line: bytes) -> None:
        if self._state == "size":
            digits = line.split(b";", 1)[0].strip(b" \t")
            if not digits or len(digits) > 15 or not all(c in _HEX_DIGITS for c in digits):
                raise ProtocolError("a malformed chunk size")
            self._left = int(digits, 16)
            self._state = "data" if self._left else "trailer"
        elif self._state == "data-end":
            if line:
                raise ProtocolError("a chunk longer than its size")
            self._state = "size"
        elif not line:  # trailer section: an empty line ends it
            self.done = True
