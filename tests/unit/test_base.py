"""The transport contract (transports/base.py): Endpoint parsing, DialError, and translating
OS/TLS exceptions into the failure taxonomy at one boundary."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from transports.base import DialError, Endpoint, Failure, Op, classify_os_error, format_hostport

# --- Endpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        pytest.param("example.com:443", None, Endpoint("example.com", 443), id="name"),
        pytest.param("127.0.0.1:1080", None, Endpoint("127.0.0.1", 1080), id="ipv4"),
        pytest.param("[::1]:1080", None, Endpoint("::1", 1080), id="ipv6"),
        pytest.param("[2001:db8::1]:8443", None, Endpoint("2001:db8::1", 8443), id="ipv6-long"),
        pytest.param("example.com", 443, Endpoint("example.com", 443), id="default-port"),
        pytest.param("example.com:", 80, Endpoint("example.com", 80), id="empty-port-default"),
        pytest.param("[::1]", 443, Endpoint("::1", 443), id="ipv6-default-port"),
        pytest.param("[::1]:", 443, Endpoint("::1", 443), id="ipv6-empty-port-default"),
        pytest.param("  example.com:80 \n", None, Endpoint("example.com", 80), id="whitespace"),
        pytest.param("example.com:0", None, Endpoint("example.com", 0), id="port-0-for-listen"),
        pytest.param("h:65535", None, Endpoint("h", 65535), id="port-65535"),
        pytest.param("h:0080", None, Endpoint("h", 80), id="leading-zeros"),
    ],
)
def test_endpoint_parse(text: str, default_port: int | None, expected: Endpoint) -> None:
    assert Endpoint.parse(text, default_port) == expected


@pytest.mark.parametrize(
    ("text", "default_port", "message"),
    [
        pytest.param("example.com", None, "expected HOST:PORT", id="no-port"),
        pytest.param("example.com:", None, "expected HOST:PORT", id="empty-port"),
        pytest.param("::1", None, r"\[ADDRESS\]:PORT", id="ipv6-no-brackets"),
        pytest.param("::1:443", 443, r"\[ADDRESS\]:PORT", id="ipv6-no-brackets-with-port"),
        pytest.param("[::1", None, "missing ']'", id="unclosed-bracket"),
        pytest.param("[::1]443", None, "expected ':PORT' after ']'", id="no-colon-after-bracket"),
        pytest.param("[::1]:x", None, "not a number", id="ipv6-bad-port"),
        pytest.param("example.com:https", None, "not a number", id="named-port"),
        pytest.param("example.com:-1", None, "not a number", id="negative"),
        pytest.param("example.com:+80", None, "not a number", id="plus-sign"),
        pytest.param("example.com: 80", None, "not a number", id="space-in-port"),
        pytest.param("example.com:65536", None, "out of range", id="too-big"),
        pytest.param(":80", None, "empty host", id="empty-host"),
        pytest.param("[]:80", None, "empty host", id="empty-brackets"),
        pytest.param("", 80, "empty host", id="empty"),
    ],
)
def test_endpoint_parse_errors(text: str, default_port: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Endpoint.parse(text, default_port)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("example.com:\u0661\u0660\u0668\u0660", id="arabic-indic-digits"),
        pytest.param("example.com:\uff18\uff10", id="fullwidth-digits"),
        pytest.param("example.com:\u00b2", id="superscript-two"),
    ],
)
def test_endpoint_parse_port_is_ascii_digits_only(text: str) -> None:
    """str.isdigit() is true for non-ASCII digits and int() accepts most of them, so
    "host:١٠٨٠" silently means port 1080 (and "host:²" fails with int()'s own message).
    A port is ASCII digits: the error should say 'is not a number'."""
    with pytest.raises(ValueError, match="not a number"):
        Endpoint.parse(text)


def test_endpoint_validates_itself() -> None:
    with pytest.raises(ValueError, match="empty host"):
        Endpoint("", 80)
    with pytest.raises(ValueError, match="out of range"):
        Endpoint("h", 65536)
    with pytest.raises(ValueError, match="out of range"):
        Endpoint("h", -1)


@pytest.mark.parametrize(
    ("endpoint", "shown", "is_ip"),
    [
        pytest.param(Endpoint("example.com", 443), "example.com:443", False, id="name"),
        pytest.param(Endpoint("10.0.0.1", 80), "10.0.0.1:80", True, id="ipv4"),
        pytest.param(Endpoint("::1", 80), "[::1]:80", True, id="ipv6"),
    ],
)
def test_endpoint_str_and_ip(endpoint: Endpoint, shown: str, is_ip: bool) -> None:
    assert str(endpoint) == shown
    assert format_hostport(endpoint.host, endpoint.port) == shown
    assert (endpoint.ip is not None) == is_ip
    assert Endpoint.parse(shown) == endpoint  # what str() shows parses back


# --- DialError ----------------------------------------------------------------------------


def test_dial_error_text() -> None:
    err = DialError(Failure.CONNECTION_RESET, Op.TLS_HANDSHAKE, "DPI after ClientHello")
    assert str(err) == "connection_reset during tls_handshake: DPI after ClientHello"
    assert repr(err) == ("DialError('connection_reset', 'tls_handshake', 'DPI after ClientHello')")
    assert err.args == ("connection_reset during tls_handshake: DPI after ClientHello",)


def test_dial_error_without_detail() -> None:
    err = DialError(Failure.DNS_NXDOMAIN, Op.RESOLVE)
    assert str(err) == "dns_nxdomain_error during resolve"
    assert err.detail == ""


def test_dial_error_is_a_connection_error() -> None:
    """Callers that already catch ConnectionError/OSError keep working."""
    with pytest.raises(ConnectionError):
        raise DialError(Failure.TIMEOUT, Op.CONNECT)
    assert issubclass(DialError, OSError)


def test_failure_and_op_print_as_their_values() -> None:
    assert str(Failure.TIMEOUT) == "generic_timeout_error"
    assert f"{Op.PROXY_HANDSHAKE}" == "proxy_handshake"
    assert Failure("eof_error") is Failure.EOF


# --- classify_os_error --------------------------------------------------------------------


def cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def bare_cert_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError()
    exc.verify_code = 62
    exc.verify_message = message
    return exc


def gai_error(code: int) -> socket.gaierror:
    return socket.gaierror(code, "resolver said no")


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        pytest.param(
            OSError(errno.ECONNREFUSED, "Connection refused"),
            Failure.CONNECTION_REFUSED,
            id="ECONNREFUSED",
        ),
        pytest.param(ConnectionRefusedError(), Failure.CONNECTION_REFUSED, id="refused-no-errno"),
        pytest.param(
            OSError(errno.ECONNRESET, "Connection reset by peer"),
            Failure.CONNECTION_RESET,
            id="ECONNRESET",
        ),
        pytest.param(ConnectionResetError(), Failure.CONNECTION_RESET, id="reset-no-errno"),
        pytest.param(BrokenPipeError(), Failure.CONNECTION_RESET, id="broken-pipe"),
        pytest.param(OSError(errno.EPIPE, "Broken pipe"), Failure.CONNECTION_RESET, id="EPIPE"),
        pytest.param(
            OSError(errno.ECONNABORTED, "aborted"), Failure.CONNECTION_RESET, id="ECONNABORTED"
        ),
        pytest.param(
            OSError(errno.ETIMEDOUT, "Connection timed out"), Failure.TIMEOUT, id="ETIMEDOUT"
        ),
        pytest.param(
            OSError(errno.EHOSTUNREACH, "No route to host"),
            Failure.HOST_UNREACHABLE,
            id="EHOSTUNREACH",
        ),
        pytest.param(
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            Failure.NETWORK_UNREACHABLE,
            id="ENETUNREACH",
        ),
        pytest.param(
            OSError(errno.EADDRNOTAVAIL, "no address"),
            Failure.NETWORK_UNREACHABLE,
            id="EADDRNOTAVAIL",
        ),
        pytest.param(TimeoutError(), Failure.TIMEOUT, id="TimeoutError"),
        pytest.param(TimeoutError(), Failure.TIMEOUT, id="asyncio-TimeoutError"),
        pytest.param(TimeoutError("timed out"), Failure.TIMEOUT, id="socket-timeout"),
        pytest.param(asyncio.IncompleteReadError(b"ab", 10), Failure.EOF, id="IncompleteReadError"),
        pytest.param(EOFError(), Failure.EOF, id="EOFError"),
        pytest.param(
            cert_error(62, "Hostname mismatch"), Failure.SSL_INVALID_HOSTNAME, id="ssl-62-hostname"
        ),
        pytest.param(
            cert_error(64, "IP address mismatch"), Failure.SSL_INVALID_HOSTNAME, id="ssl-64-ip"
        ),
        pytest.param(
            cert_error(20, "unable to get local issuer certificate"),
            Failure.SSL_UNKNOWN_AUTHORITY,
            id="ssl-20-unknown-issuer",
        ),
        pytest.param(
            cert_error(18, "self-signed certificate"),
            Failure.SSL_UNKNOWN_AUTHORITY,
            id="ssl-18-self-signed",
        ),
        pytest.param(
            cert_error(10, "certificate has expired"),
            Failure.SSL_INVALID_CERTIFICATE,
            id="ssl-10-expired",
        ),
        pytest.param(
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), Failure.EOF, id="ssl-eof"
        ),
        pytest.param(
            ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"),
            Failure.EOF,
            id="ssl-zero-return",
        ),
        pytest.param(
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            Failure.SSL_FAILED_HANDSHAKE,
            id="ssl-other",
        ),
        pytest.param(gai_error(socket.EAI_NONAME), Failure.DNS_NXDOMAIN, id="EAI_NONAME"),
        pytest.param(gai_error(socket.EAI_AGAIN), Failure.DNS_TIMEOUT, id="EAI_AGAIN"),
        pytest.param(gai_error(socket.EAI_FAIL), Failure.DNS_SERVFAIL, id="EAI_FAIL"),
        pytest.param(gai_error(socket.EAI_SERVICE), Failure.UNKNOWN, id="EAI_SERVICE"),
        pytest.param(
            OSError(errno.EACCES, "Permission denied"), Failure.UNKNOWN, id="unmapped-errno"
        ),
        pytest.param(ValueError("odd"), Failure.UNKNOWN, id="not-an-os-error"),
    ],
)
def test_classify_os_error(exc: BaseException, failure: Failure) -> None:
    err = classify_os_error(exc, Op.CONNECT)
    assert err.failure is failure
    assert err.op is Op.CONNECT


@pytest.mark.skipif(not hasattr(socket, "EAI_NODATA"), reason="no EAI_NODATA on this platform")
def test_classify_eai_nodata() -> None:
    assert (
        classify_os_error(gai_error(socket.EAI_NODATA), Op.RESOLVE).failure is Failure.DNS_NO_ANSWER
    )


def test_classify_keeps_the_op_and_given_detail() -> None:
    err = classify_os_error(
        OSError(errno.ECONNREFUSED, "Connection refused"), Op.PROXY_HANDSHAKE, "proxy 10.0.0.2:1080"
    )
    assert (err.failure, err.op, err.detail) == (
        Failure.CONNECTION_REFUSED,
        Op.PROXY_HANDSHAKE,
        "proxy 10.0.0.2:1080",
    )


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        pytest.param(
            OSError(errno.ECONNRESET, "Connection reset by peer"),
            "Connection reset by peer",
            id="strerror",
        ),
        pytest.param(
            cert_error(62, "Hostname mismatch"),
            "Hostname mismatch",  # the verify message, not the "[SSL: ...]" strerror
            id="ssl-verify-message-first",
        ),
        pytest.param(
            bare_cert_error("Hostname mismatch"), "Hostname mismatch", id="verify-message"
        ),
        pytest.param(ValueError("odd thing"), "odd thing", id="str"),
        pytest.param(TimeoutError(), "TimeoutError", id="type-name"),
    ],
)
def test_classify_default_detail(exc: BaseException, detail: str) -> None:
    assert classify_os_error(exc, Op.READ).detail == detail


def test_classify_passes_dial_errors_through() -> None:
    original = DialError(Failure.DNS_BOGON, Op.RESOLVE, "answer is 10.10.34.34")
    assert classify_os_error(original, Op.CONNECT) is original
