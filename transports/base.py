"""The transport contract: where to go (Endpoint), how to get there (Dialer), what you get
(Stream), and why it failed (DialError with a Failure and the Op that failed).

Every transport in this package is a Dialer; wrappers take an inner Dialer and return streams
built on the inner one's streams. Nothing here knows about services, routes or the UI.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import errno
import functools
import ipaddress
import socket
import ssl
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from .wire import format_hostport

__all__ = [
    "DialError",
    "Dialer",
    "Endpoint",
    "Failure",
    "Op",
    "Stream",
    "classify_os_error",
    "format_hostport",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Failure(enum.StrEnum):
    """Why a dial failed. Values follow OONI's failure strings where one fits, so users and
    researchers read them the way they read OONI measurements."""

    DNS_NXDOMAIN = "dns_nxdomain_error"
    DNS_BOGON = "dns_bogon_error"
    DNS_SPOOFED = "dns_spoofed"
    DNS_TIMEOUT = "dns_timeout"
    DNS_SERVFAIL = "dns_servfail_error"
    DNS_NO_ANSWER = "dns_no_answer"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    HOST_UNREACHABLE = "host_unreachable"
    NETWORK_UNREACHABLE = "network_unreachable"
    TIMEOUT = "generic_timeout_error"
    EOF = "eof_error"
    SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
    SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
    SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
    SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
    HTTP_BLOCKPAGE = "http_blockpage"
    THROTTLED = "throttled"
    STALLED = "stalled"
    PROXY_AUTH_FAILED = "proxy_auth_failed"
    PROXY_REFUSED = "proxy_refused"
    PROXY_PROTOCOL_ERROR = "proxy_protocol_error"
    # A pluggable transport's client program (transports/pt): not installed, or it did not
    # start (VERSION-ERROR, CMETHOD-ERROR, ...) or exited. OONI has no strings for these.
    PT_NOT_INSTALLED = "pt_not_installed"
    PT_FAILED = "pt_failed"
    # A proxy core for vless/vmess/trojan links (transports/core): none installed, or it
    # cannot do the link, rejected its config, or exited.
    CORE_NOT_INSTALLED = "core_not_installed"
    CORE_FAILED = "core_failed"
    # The route cannot carry this destination at all (`tgws` carries only connections to
    # Telegram's data centres): not a network condition, so it says nothing of the route's
    # health, and the router moves on.
    NOT_APPLICABLE = "not_applicable"
    UNKNOWN = "unknown_failure"


class Op(enum.StrEnum):
    """The operation that failed."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    PROXY_HANDSHAKE = "proxy_handshake"
    TLS_HANDSHAKE = "tls_handshake"
    HTTP_ROUND_TRIP = "http_round_trip"
    MTPROTO_ROUND_TRIP = "mtproto_round_trip"  # a probe's first MTProto request and answer
    READ = "read"
    WRITE = "write"


# Where a dial in this task has got to: RESOLVE while `direct` looks a name up, CONNECT until
# a proxy layer has its connection, then PROXY_HANDSHAKE (each proxy layer of a chain sets it
# again after its inner layers are done). A caller whose own timeout cuts a dial short reads it
# to say which step was running (a probe's report, a route's overall timeout), since the
# dialer never got to raise its own DialError.
dial_phase: contextvars.ContextVar[Op] = contextvars.ContextVar("dial_phase", default=Op.CONNECT)

# When (time.monotonic()) the caller's deadline for the whole dial ends, if it set one (a
# route's timeout, which bounds every layer of its chain). A layer whose own timeout would end
# no sooner leaves the bounding to that deadline: the caller's error names what ran out, and
# the dial costs one timer, not one per layer.
dial_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "dial_deadline", default=None
)


class DialError(ConnectionError):
    """A dial failed. `failure` and `op` are machine-readable; `detail` is one human sentence
    that never contains secrets. It is a ConnectionError so callers that already catch those
    keep working."""

    def __init__(self, failure: Failure, op: Op, detail: str = "") -> None:
        self.failure = failure
        self.op = op
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.failure.value} during {self.op.value}"
        return f"{text}: {self.detail}" if self.detail else text

    def __repr__(self) -> str:
        return f"DialError({self.failure.value!r}, {self.op.value!r}, {self.detail!r})"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A destination as the client named it: a domain name or an IP literal, and a port."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("empty host")
        # Port 0 only makes sense for listening ("any free port"); destinations are checked
        # where they come in (inbound parsers, chain and probe parsers).
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} out of range 0-65535")

    @property
    def ip(self) -> IPAddress | None:
        """The host as an IP address when it is a literal, else None."""
        return _ip_literal(self.host)

    def __str__(self) -> str:
        return format_hostport(self.host, self.port)

    @classmethod
    def parse(cls, text: str, default_port: int | None = None) -> Endpoint:
        """Parse "host:port", "[v6]:port" or, with a default port, a bare host."""
        text = text.strip()
        host, port_text = text, ""
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ']' after IPv6 address")
            host, rest = text[1:end], text[end + 1 :]
            if rest.startswith(":"):
                port_text = rest[1:]
            elif rest:
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        elif text.count(":") > 1:
            raise ValueError(f"{text!r}: write IPv6 addresses as [ADDRESS]:PORT")
        if not port_text:
            if default_port is None:
                raise ValueError(f"{text!r}: expected HOST:PORT")
            port = default_port
        else:
            if not (port_text.isascii() and port_text.isdigit()):
                raise ValueError(f"{text!r}: port {port_text!r} is not a number")
            port = int(port_text)
        if not host:
            raise ValueError(f"{text!r}: empty host")
        return cls(host, port)


@functools.lru_cache(maxsize=4096)
def _ip_literal(host: str) -> IPAddress | None:
    # Cached: a connection asks several times (service match, policy, dialer), destinations
    # repeat, and parsing costs more than the rest of those checks. Addresses are immutable.
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Stream(ABC):
    """A connected, ordered byte stream with half-close.

    `read` returns b"" at end of stream. `write` never blocks; `drain` waits until the
    outgoing buffer is below its limit. `write_eof` closes our sending direction while the
    other keeps flowing. `unread` puts bytes back in front of the read buffer, so a protocol
    that read too far (an HTTP response head followed by payload) can hand the rest on.
    """

    @abstractmethod
    async def read(self, n: int = 65536) -> bytes: ...

    @abstractmethod
    def unread(self, data: bytes) -> None: ...

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def drain(self) -> None: ...

    @abstractmethod
    def can_write_eof(self) -> bool: ...

    @abstractmethod
    def write_eof(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def abort(self) -> None:
        """Close at once, discarding buffered data; a TCP peer sees a reset."""

    @abstractmethod
    async def wait_closed(self) -> None: ...

    @abstractmethod
    def is_closing(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def raw_socket_stream(self) -> Any:
        """The plain TCP stream this stream passes through to unchanged, if any (else None).

        The relay uses it to move bytes transport-to-transport, skipping Python-level copies.
        A wrapper returns its inner stream's value only once it no longer alters the bytes.
        """
        return None

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        missing = n
        while missing:
            chunk = await self.read(missing)
            if not chunk:
                got = b"".join(parts)
                raise asyncio.IncompleteReadError(got, n)
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    async def readuntil(self, separator: bytes, limit: int) -> bytes:
        """Read up to and including `separator`; bytes after it stay readable.

        Raises asyncio.LimitOverrunError past `limit` bytes and IncompleteReadError at EOF.
        """
        buf = bytearray()
        while True:
            chunk = await self.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            start = max(0, len(buf) - len(separator) + 1)
            buf += chunk
            idx = buf.find(separator, start)
            if idx >= 0:
                end = idx + len(separator)
                if end < len(buf):
                    self.unread(bytes(buf[end:]))
                return bytes(buf[:end])
            if len(buf) > limit:
                raise asyncio.LimitOverrunError("separator not found within limit", len(buf))


class Dialer(Protocol):
    """Given where to go, return a connected Stream or raise DialError."""

    async def dial(self, target: Endpoint) -> Stream: ...


# --- translating OS and TLS errors into the taxonomy, at one boundary -----------------------

_ERRNO_FAILURES = {
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ECONNRESET: Failure.CONNECTION_RESET,
    errno.ECONNABORTED: Failure.CONNECTION_RESET,
    errno.EPIPE: Failure.CONNECTION_RESET,
    errno.ETIMEDOUT: Failure.TIMEOUT,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Failure.NETWORK_UNREACHABLE,
    errno.EADDRNOTAVAIL: Failure.NETWORK_UNREACHABLE,
    errno.EAFNOSUPPORT: Failure.NETWORK_UNREACHABLE,
}


def _ssl_failure(exc: ssl.SSLError) -> Failure:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        # X509_V_ERR_HOSTNAME_MISMATCH = 62, IP mismatch = 64
        if code in (62, 64):
            return Failure.SSL_INVALID_HOSTNAME
        # unable to get local issuer (20), self-signed (18), self-signed in chain (19),
        # unable to get issuer cert (2)
        if code in (2, 18, 19, 20, 21):
            return Failure.SSL_UNKNOWN_AUTHORITY
        return Failure.SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Failure.EOF
    return Failure.SSL_FAILED_HANDSHAKE


def classify_os_error(exc: BaseException, op: Op, detail: str = "") -> DialError:
    """Translate an exception raised by socket or TLS code into a DialError.

    Decides on exception types and errno values, never on message text.
    """
    if isinstance(exc, DialError):
        return exc
    failure = Failure.UNKNOWN
    if isinstance(exc, ssl.SSLError):
        failure = _ssl_failure(exc)
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        failure = Failure.TIMEOUT
    elif isinstance(exc, asyncio.IncompleteReadError | EOFError):
        failure = Failure.EOF
    elif isinstance(exc, socket.gaierror):
        failure = _gai_failure(exc)
    elif isinstance(exc, OSError) and exc.errno in _ERRNO_FAILURES:
        failure = _ERRNO_FAILURES[exc.errno]
    elif isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        failure = Failure.CONNECTION_RESET
    elif isinstance(exc, ConnectionRefusedError):
        failure = Failure.CONNECTION_REFUSED
    if not detail:
        detail = _describe(exc)
    return DialError(failure, op, detail)


def _gai_failure(exc: socket.gaierror) -> Failure:
    code = exc.errno
    if code == socket.EAI_NONAME:
        return Failure.DNS_NXDOMAIN
    if code == socket.EAI_AGAIN:
        return Failure.DNS_TIMEOUT
    nodata = getattr(socket, "EAI_NODATA", None)
    if nodata is not None and code == nodata:
        return Failure.DNS_NO_ANSWER
    if code == socket.EAI_FAIL:
        return Failure.DNS_SERVFAIL
    return Failure.UNKNOWN


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message  # more telling than its strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text or type(exc).__name__
