"""detour's HTTP proxy side (helper/proxy/http.py): request heads in, a destination and the
head to forward out, or ProtocolError carrying a complete HTTP error response."""

from __future__ import annotations

import base64

import pytest

from helper.proxy.handshake import ProtocolError
from helper.proxy.http import (
    AUTH_REQUIRED,
    MAX_HEAD,
    HttpRequest,
    check_basic_auth,
    error_response,
    forwarded_head,
    parse_request_head,
)
from transports import Endpoint


def head(request_line: str, *headers: str) -> bytes:
    return ("\r\n".join([request_line, *headers]) + "\r\n\r\n").encode("latin-1")


def status_of(err: pytest.ExceptionInfo[ProtocolError]) -> int:
    reply = err.value.reply
    assert reply.startswith(b"HTTP/1.1 "), reply
    assert reply.count(b"\r\n\r\n") == 1, "one complete head, then the body"
    return int(reply[9:12])


# --- CONNECT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "destination"),
    [
        pytest.param("web.telegram.org:443", Endpoint("web.telegram.org", 443), id="name"),
        pytest.param("149.154.167.51:443", Endpoint("149.154.167.51", 443), id="ipv4"),
        pytest.param("[::1]:443", Endpoint("::1", 443), id="ipv6"),
        pytest.param("[2001:DB8::1]:8443", Endpoint("2001:db8::1", 8443), id="ipv6-normalised"),
        pytest.param("example.com.:443", Endpoint("example.com", 443), id="trailing-dot"),
        pytest.param("example.com:65535", Endpoint("example.com", 65535), id="port-65535"),
    ],
)
def test_connect_parses(target: str, destination: Endpoint) -> None:
    request = parse_request_head(head(f"CONNECT {target} HTTP/1.1", f"Host: {target}"))
    assert request.is_connect
    assert request.method == "CONNECT"
    assert request.target == target
    assert request.version == "HTTP/1.1"
    assert request.destination == destination
    assert request.headers == [("Host", target)]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("example.com", id="no-port"),
        pytest.param("example.com:", id="empty-port"),
        pytest.param("example.com:0", id="port-0"),
        pytest.param("example.com:70000", id="port-too-big"),
        pytest.param("example.com:https", id="port-name"),
        pytest.param("::1:443", id="ipv6-without-brackets"),
        pytest.param("[::1:443", id="unclosed-bracket"),
        pytest.param(":443", id="no-host"),
        pytest.param("exa\x00mple.com:443", id="nul-in-name"),
        pytest.param("user@example.com:443", id="userinfo"),
        pytest.param("http://example.com:443", id="url-instead-of-authority"),
    ],
)
def test_connect_with_bad_authority_is_400(target: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head(f"CONNECT {target} HTTP/1.1"))
    assert status_of(err) == 400


# --- absolute-form requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "destination", "path"),
    [
        pytest.param("http://example.com/", Endpoint("example.com", 80), "/", id="root"),
        pytest.param("http://example.com", Endpoint("example.com", 80), "/", id="no-path"),
        pytest.param(
            "http://example.com/a/b?q=1&r=2",
            Endpoint("example.com", 80),
            "/a/b?q=1&r=2",
            id="path-and-query",
        ),
        pytest.param("http://example.com?q", Endpoint("example.com", 80), "/?q", id="query-only"),
        pytest.param(
            "http://example.com:8080/x", Endpoint("example.com", 8080), "/x", id="with-port"
        ),
        pytest.param("http://example.com:/x", Endpoint("example.com", 80), "/x", id="empty-port"),
        pytest.param("http://127.0.0.1:8000/", Endpoint("127.0.0.1", 8000), "/", id="ipv4"),
        pytest.param("http://[::1]:8080/x", Endpoint("::1", 8080), "/x", id="ipv6"),
        pytest.param("http://[::1]/", Endpoint("::1", 80), "/", id="ipv6-default-port"),
        pytest.param("HTTP://Example.com/", Endpoint("Example.com", 80), "/", id="scheme-case"),
        pytest.param(
            "http://example.com/page#section", Endpoint("example.com", 80), "/page", id="fragment"
        ),
    ],
)
def test_absolute_form_parses(target: str, destination: Endpoint, path: str) -> None:
    request = parse_request_head(head(f"GET {target} HTTP/1.1", "Accept: */*"))
    assert not request.is_connect
    assert request.target == target
    assert request.destination == destination
    assert request.path == path


@pytest.mark.parametrize(
    ("request_line", "status", "why"),
    [
        pytest.param("GET https://example.com/ HTTP/1.1", 400, "use CONNECT", id="https"),
        pytest.param("GET /index.html HTTP/1.1", 400, "absolute-form", id="origin-form"),
        pytest.param("OPTIONS * HTTP/1.1", 400, "absolute-form", id="asterisk-form"),
        pytest.param("GET ftp://example.com/ HTTP/1.1", 501, "only http://", id="ftp"),
        pytest.param("GET example.com/ HTTP/1.1", 400, "", id="no-scheme"),
        pytest.param(
            "GET http://alice:pw@example.com/ HTTP/1.1", 400, "credentials", id="userinfo"
        ),
        pytest.param("GET http://[::1/ HTTP/1.1", 400, "", id="broken-ipv6"),
        pytest.param("GET http://example.com:0/ HTTP/1.1", 400, "", id="port-0"),
        pytest.param("GET http://example.com:99999/ HTTP/1.1", 400, "", id="port-too-big"),
    ],
)
def test_absolute_form_errors(request_line: str, status: int, why: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head(request_line, "Host: example.com"))
    assert status_of(err) == status
    assert why in str(err.value)
    assert why.encode() in err.value.reply


def test_http_target_without_host_is_a_bad_request() -> None:
    """`http:///path` is an http:// target missing its host: a malformed request (400), not an
    unsupported scheme (501 "only http:// targets ... are supported" contradicts itself)."""
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head("GET http:///path HTTP/1.1", "Host: example.com"))
    assert status_of(err) == 400


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        pytest.param(("Transfer-Encoding: chunked", "Content-Length: 3"), 400, id="te-and-cl"),
        pytest.param(("Content-Length: 3", "Content-Length: 4"), 400, id="two-lengths"),
        pytest.param(("Content-Length: -1",), 400, id="negative-length"),
        pytest.param(("Content-Length: 0x10",), 400, id="non-numeric-length"),
        pytest.param(("Transfer-Encoding: chunked, gzip",), 501, id="chunked-not-last"),
        pytest.param(("Transfer-Encoding: gzip",), 501, id="unknown-coding"),
    ],
)
def test_a_forwarded_request_of_unclear_framing_is_refused(
    framing: tuple[str, ...], status: int
) -> None:
    """RFC 9112 §6.3: a request whose body length cannot be told for sure is answered, never
    passed on for the origin to read differently."""
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head("POST http://example.com/ HTTP/1.1", "Host: x", *framing))
    assert status_of(err) == status
    assert err.value.reply.startswith(f"HTTP/1.1 {status} ".encode())


@pytest.mark.parametrize("framing", [(), ("Content-Length: 12",), ("Transfer-Encoding: chunked",)])
def test_a_forwarded_request_of_clear_framing_passes(framing: tuple[str, ...]) -> None:
    request = parse_request_head(head("POST http://example.com/ HTTP/1.1", "Host: x", *framing))
    assert request.destination == Endpoint("example.com", 80)


# --- request line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        pytest.param("GET http://example.com/ HTTP/2.0", 505, id="http2"),
        pytest.param("GET http://example.com/ HTTP/1.2", 505, id="http1.2"),
        pytest.param("GET http://example.com/ HTTP/0.9", 505, id="http0.9"),
        pytest.param("GET http://example.com/ http/1.1", 400, id="lowercase-version"),
        pytest.param("GET http://example.com/ FOO/1.1", 400, id="not-http"),
        pytest.param("GET http://example.com/", 400, id="no-version"),
        pytest.param("GET  http://example.com/ HTTP/1.1", 400, id="double-space"),
        pytest.param("GET http://example.com/ HTTP/1.1 ", 400, id="trailing-space"),
        pytest.param("GET http://exa mple.com/ HTTP/1.1", 400, id="space-in-target"),
        pytest.param("G(T http://example.com/ HTTP/1.1", 400, id="bad-method-char"),
        pytest.param(" http://example.com/ HTTP/1.1", 400, id="empty-method"),
        pytest.param("", 400, id="empty-request-line"),
        pytest.param("\x16\x03\x01\x02\x00\x01", 400, id="tls-bytes"),
    ],
)
def test_bad_request_lines(request_line: str, status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head(request_line))
    assert status_of(err) == status


def test_http_1_0_is_accepted() -> None:
    request = parse_request_head(head("GET http://example.com/ HTTP/1.0"))
    assert request.version == "HTTP/1.0"


def test_custom_method_token_is_accepted() -> None:
    """Methods are tokens (RFC 9110 §9.1); a proxy forwards the ones it does not know."""
    request = parse_request_head(head("PROPFIND http://example.com/dav HTTP/1.1"))
    assert request.method == "PROPFIND"


# --- header fields ------------------------------------------------------------------------


def test_headers_keep_order_and_case_and_strip_whitespace() -> None:
    request = parse_request_head(
        head(
            "GET http://example.com/ HTTP/1.1",
            "Host: example.com",
            "X-Empty:",
            "X-Padded: \t value with  inner spaces \t",
            "x-dup: 1",
            "X-Dup: 2",
        )
    )
    assert request.headers == [
        ("Host", "example.com"),
        ("X-Empty", ""),
        ("X-Padded", "value with  inner spaces"),
        ("x-dup", "1"),
        ("X-Dup", "2"),
    ]
    assert request.header("HOST") == "example.com"
    assert request.header("x-DUP") == "1"
    assert request.header("missing") is None


@pytest.mark.parametrize(
    "field",
    [
        pytest.param("Host : example.com", id="space-before-colon"),
        pytest.param("Host\t: example.com", id="tab-before-colon"),
        pytest.param(" folded continuation", id="obs-fold-space"),
        pytest.param("\tfolded: continuation", id="obs-fold-tab"),
        pytest.param("NoColonHere", id="no-colon"),
        pytest.param(": value", id="empty-name"),
        pytest.param("X(Bad): value", id="bad-name-char"),
        pytest.param("X-Nul: a\x00b", id="nul-in-value"),
        pytest.param("X-Lf: a\nInjected: yes", id="bare-lf-in-value"),
        pytest.param("X-Cr: a\rb", id="bare-cr-in-value"),
        pytest.param("", id="empty-line-inside-head"),
    ],
)
def test_malformed_header_fields_are_400(field: str) -> None:
    """RFC 9112 §5.1/§5.2: no whitespace before the colon; obs-fold is rejected."""
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head("GET http://example.com/ HTTP/1.1", "Accept: */*", field))
    assert status_of(err) == 400


def test_obs_fold_after_a_valid_field_is_400() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request_head(
            head("GET http://example.com/ HTTP/1.1", "X-Long: part one", "  part two")
        )
    assert status_of(err) == 400


def test_100_header_fields_are_accepted() -> None:
    request = parse_request_head(
        head("GET http://example.com/ HTTP/1.1", *(f"X-{i}: {i}" for i in range(100)))
    )
    assert len(request.headers) == 100


def test_header_flood_is_431() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_request_head(
            head("GET http://example.com/ HTTP/1.1", *(f"X-{i}: {i}" for i in range(101)))
        )
    assert status_of(err) == 431


def test_oversized_head_is_431() -> None:
    big = "X-Big: " + "a" * MAX_HEAD
    with pytest.raises(ProtocolError) as err:
        parse_request_head(head("GET http://example.com/ HTTP/1.1", big))
    assert status_of(err) == 431


def test_latin1_header_values_survive() -> None:
    """Obsolete non-ASCII header text (obs-text) is kept byte for byte."""
    request = parse_request_head(b"GET http://example.com/ HTTP/1.1\r\nX-Name: J\xf6rg\r\n\r\n")
    assert request.headers == [("X-Name", "J\xf6rg")]


# --- Proxy-Authorization ------------------------------------------------------------------


def with_auth(value: str | None) -> HttpRequest:
    headers = [("Host", "example.com:443")]
    if value is not None:
        headers.append(("Proxy-Authorization", value))
    return HttpRequest(
        "CONNECT", "example.com:443", "HTTP/1.1", headers, Endpoint("example.com", 443)
    )


def basic(text: bytes) -> str:
    return "Basic " + base64.b64encode(text).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(basic(b"alice:secret"), ("alice", "secret"), id="basic"),
        pytest.param("basic " + basic(b"alice:secret")[6:], ("alice", "secret"), id="scheme-case"),
        pytest.param(
            "Basic   " + basic(b"alice:secret")[6:] + "  ", ("alice", "secret"), id="extra-spaces"
        ),
        pytest.param(basic(b"alice:pa:ss"), ("alice", "pa:ss"), id="colon-in-password"),
        pytest.param(basic(b"alice:"), ("alice", ""), id="empty-password"),
        pytest.param(basic("jörg:pässword".encode()), ("jörg", "pässword"), id="utf8"),
        pytest.param(None, None, id="missing"),
        pytest.param("", None, id="empty"),
        pytest.param("Bearer abc.def", None, id="bearer"),
        pytest.param("Basic", None, id="no-token"),
        pytest.param(basic(b"alicesecret"), None, id="no-colon"),
        pytest.param("Basic !!!notbase64", None, id="not-base64"),
        pytest.param("Basic YWxpY2U6c2VjcmV", None, id="bad-padding"),
        pytest.param(basic(b"\xff\xfe:x"), None, id="not-utf8"),
        pytest.param("Basic \xe9t\xe9", None, id="non-ascii-token"),
    ],
)
def test_check_basic_auth(value: str | None, expected: tuple[str, str] | None) -> None:
    """Anything but a well-formed Basic credential is "no credentials" (then 407), never an
    exception: the header is client input, decoded as latin-1, so it can hold any byte."""
    assert check_basic_auth(with_auth(value)) == expected


# --- forwarding an absolute-form request --------------------------------------------------


def forwarded(request_line: str, *headers: str) -> bytes:
    return forwarded_head(parse_request_head(head(request_line, *headers)))


def test_forwarded_head_exact_bytes() -> None:
    assert forwarded(
        "GET http://example.com/a?b=1 HTTP/1.1",
        "Host: example.com",
        "User-Agent: curl/8.5.0",
        "Accept: */*",
        "Proxy-Connection: Keep-Alive",
    ) == (
        b"GET /a?b=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"User-Agent: curl/8.5.0\r\n"
        b"Accept: */*\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )


def test_forwarded_head_drops_hop_by_hop_fields() -> None:
    out = forwarded(
        "GET http://example.com/ HTTP/1.1",
        "Host: example.com",
        "Connection: keep-alive, X-Hop-Secret",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic YWxpY2U6c2VjcmV0",
        "TE: trailers",
        "Trailer: Expires",
        "Upgrade: h2c",
        "X-Hop-Secret: do-not-forward",
        "X-End-To-End: keep",
    )
    assert out == (
        b"GET / HTTP/1.1\r\nHost: example.com\r\nX-End-To-End: keep\r\nConnection: close\r\n\r\n"
    )


def test_forwarded_head_drops_fields_named_in_proxy_connection_too() -> None:
    out = forwarded(
        "GET http://example.com/ HTTP/1.1",
        "Proxy-Connection: X-Private",
        "X-Private: 1",
    )
    assert b"X-Private" not in out


@pytest.mark.parametrize(
    ("target", "host_fields", "expected_host"),
    [
        pytest.param("http://example.com/", ["Host: example.com"], b"example.com", id="same"),
        pytest.param("http://example.com/", ["Host: evil.example"], b"example.com", id="rewritten"),
        pytest.param(
            "http://example.com:8080/", ["Host: example.com"], b"example.com:8080", id="port"
        ),
        pytest.param("http://example.com:80/", [], b"example.com", id="default-port-omitted"),
        pytest.param("http://[::1]:8080/", ["Host: x"], b"[::1]:8080", id="ipv6"),
        pytest.param("http://[::1]/", [], b"[::1]", id="ipv6-default-port"),
        pytest.param("http://example.com/", [], b"example.com", id="missing-added"),
        pytest.param(
            "http://example.com/", ["Host: a.example", "Host: b.example"], b"example.com", id="dup"
        ),
    ],
)
def test_forwarded_host_is_the_uri_authority(
    target: str, host_fields: list[str], expected_host: bytes
) -> None:
    """RFC 9112 §3.2.2: a proxy replaces Host with the authority of the absolute-form target,
    so the origin and the destination detour dialed can never disagree."""
    out = forwarded(f"GET {target} HTTP/1.1", *host_fields, "Accept: */*")
    lines = out.split(b"\r\n")
    hosts = [line for line in lines if line.lower().startswith(b"host:")]
    assert hosts == [b"Host: " + expected_host]
    assert lines[1] == b"Host: " + expected_host  # first field after the request line


def test_forwarded_head_keeps_http_1_0_and_method() -> None:
    out = forwarded("POST http://example.com/form HTTP/1.0", "Content-Length: 3")
    assert out.startswith(b"POST /form HTTP/1.0\r\nHost: example.com\r\nContent-Length: 3\r\n")
    assert out.endswith(b"Connection: close\r\n\r\n")


def test_websocket_upgrade_is_preserved() -> None:
    out = forwarded(
        "GET http://example.com/chat HTTP/1.1",
        "Host: example.com",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    )
    assert out == (
        b"GET /chat HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"\r\n"
    )


def test_connection_upgrade_without_upgrade_field_closes() -> None:
    out = forwarded("GET http://example.com/ HTTP/1.1", "Connection: upgrade")
    assert out.endswith(b"\r\nConnection: close\r\n\r\n")
    assert b"Upgrade" not in out


def test_upgrade_field_without_connection_token_is_dropped() -> None:
    """Upgrade is only meant for us if Connection names it; otherwise it is hop-by-hop junk."""
    out = forwarded("GET http://example.com/ HTTP/1.1", "Upgrade: websocket")
    assert b"Upgrade" not in out
    assert out.endswith(b"\r\nConnection: close\r\n\r\n")


# --- error responses ----------------------------------------------------------------------


def test_error_response_is_complete_and_closing() -> None:
    response = error_response(502, "cannot reach web.telegram.org")
    head_part, body = response.split(b"\r\n\r\n", 1)
    assert head_part.split(b"\r\n") == [
        b"HTTP/1.1 502 Bad Gateway",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Length: " + str(len(body)).encode(),
        b"Connection: close",
    ]
    assert body == b"detour: cannot reach web.telegram.org\n"


def test_error_response_content_length_counts_bytes() -> None:
    response = error_response(400, "bad name 'bücher'")
    head_part, body = response.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d" % len(body) in head_part
    assert body.decode("utf-8") == "detour: bad name 'bücher'\n"


def test_error_response_unknown_status_and_extra_headers() -> None:
    response = error_response(418, "teapot", "X-Why: because\r\n")
    assert response.startswith(b"HTTP/1.1 418 Error\r\n")
    assert b"\r\nX-Why: because\r\n\r\n" in response


def test_auth_required_asks_for_basic() -> None:
    assert AUTH_REQUIRED.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'\r\nProxy-Authenticate: Basic realm="detour"\r\n' in AUTH_REQUIRED


@pytest.mark.parametrize("module", ["helper.http_server", "helper.proxy", "helper.relay.run"])
def test_each_entry_point_imports_on_its_own(module: str) -> None:
    """The proxy's listener reads heads with helper/http_server.py, which imports this
    package's http.py: whichever is imported first, no circular-import error."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_an_international_name_in_utf8_is_its_name_and_goes_on_in_idna() -> None:
    """The head is read as latin-1: a UTF-8 name became bytes no resolver can encode, and
    the dial ended in an internal error (UnicodeError from getaddrinfo) and a reset."""
    name = "пример.рф"
    raw = f"CONNECT {name}:443 HTTP/1.1\r\n\r\n".encode()
    assert parse_request_head(raw).destination == Endpoint(name, 443)
    raw = f"GET http://{name}/x HTTP/1.1\r\nHost: {name}\r\n\r\n".encode()
    request = parse_request_head(raw)
    assert request.destination == Endpoint(name, 80)
    assert b"\r\nHost: xn--e1afmkfd.xn--p1ai\r\n" in forwarded_head(request)
    for bad in (b"\xff\xfe.example", "a\u0080b.example".encode()):  # not UTF-8; not IDNA
        with pytest.raises(ProtocolError) as err:
            parse_request_head(b"CONNECT " + bad + b":443 HTTP/1.1\r\n\r\n")
        assert status_of(err) == 400
