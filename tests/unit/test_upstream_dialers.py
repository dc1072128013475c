"""Client dialers for upstream proxies (transports/socks.py, transports/http_connect.py)
against scripted fake proxies: asyncio servers on 127.0.0.1 that read what the dialer sends
and answer with canned bytes. Tests assert the exact bytes the dialer sent. (Real dante,
microsocks and tinyproxy are exercised in tests/integration.)"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import pytest

from transports.base import DialError, Endpoint, Failure, Op, Stream
from transports.direct import DirectDialer
from transports.http_connect import HttpConnectDialer
from transports.socks import Socks4aDialer, Socks5Dialer

SAFETY = 5.0


@dataclass(frozen=True)
class Read:
    """Read exactly n bytes, or up to and including `until`."""

    n: int = 0
    until: bytes = b""


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the connection (everything the client sent so far has been read)."""


class ScriptedProxy:
    """Plays a script on every connection. Without a Close step, it keeps the connection
    open after the script, collecting what the client sends until the client closes."""

    def __init__(self, *steps: Read | Send | Close) -> None:
        self.steps = steps
        self.received = b""  # what the dialer sent during the script
        self.after = b""  # what the client sent after the script (payload)
        self.connections = 0
        self._done: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> Endpoint:
        assert self._server is not None
        return Endpoint("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> ScriptedProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        async with asyncio.timeout(SAFETY):
            for done in self._done:
                await done.wait()
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.Event()
        self._done.append(done)
        self.connections += 1
        try:
            for step in self.steps:
                if isinstance(step, Read):
                    if step.until:
                        self.received += await reader.readuntil(step.until)
                    else:
                        self.received += await reader.readexactly(step.n)
                elif isinstance(step, Send):
                    writer.write(step.data)
                    await writer.drain()
                else:
                    break
            else:
                while data := await reader.read(65536):
                    self.after += data
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            done.set()


async def dial(dialer: Any, target: Endpoint) -> Stream:
    async with asyncio.timeout(SAFETY):
        return await dialer.dial(target)


async def finish(stream: Stream) -> None:
    stream.close()
    await stream.wait_closed()


async def dial_error(dialer: Any, target: Endpoint) -> DialError:
    with pytest.raises(DialError) as err:
        await dial(dialer, target)
    return err.value


TARGET = Endpoint("example.com", 443)

# SOCKS5 wire pieces (RFC 1928, RFC 1929)
GREETING_NOAUTH = b"\x05\x01\x00"  # v5 NMETHODS=1 NOAUTH
GREETING_AUTH = b"\x05\x02\x02\x00"  # v5 NMETHODS=2 USERPASS NOAUTH
CHOOSE_NOAUTH = b"\x05\x00"  # v5 NOAUTH
CHOOSE_USERPASS = b"\x05\x02"  # v5 USERPASS
CHOOSE_NONE = b"\x05\xff"  # v5 NO ACCEPTABLE METHODS
LOGIN = b"\x01\x05alice\x06secret"  # VER=1 ULEN=5 alice PLEN=6 secret
LOGIN_OK = b"\x01\x00"
LOGIN_FAILED = b"\x01\x01"
REQUEST_NAME = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"  # v5 CONNECT RSV NAME 11 ... :443
REPLY_OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # v5 SUC RSV IP4 0.0.0.0 :0


def socks5(proxy: ScriptedProxy, **kwargs: Any) -> Socks5Dialer:
    return Socks5Dialer(
        DirectDialer(), proxy.endpoint, handshake_timeout=kwargs.pop("timeout", SAFETY), **kwargs
    )


# --- SOCKS5 -------------------------------------------------------------------------------


def _login(login: bytes, answer: bytes = LOGIN_OK) -> tuple[Read | Send, ...]:
    """A SOCKS5 proxy's side of a greeting offering a login and RFC 1929's exchange for
    `login`, answered `answer`."""
    return Read(4), Send(CHOOSE_USERPASS), Read(len(login)), Send(answer)


async def test_socks5_without_auth_sends_name_unresolved() -> None:
    async with ScriptedProxy(
        Read(3), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Send(REPLY_OK)
    ) as proxy:
        stream = await dial(socks5(proxy), TARGET)
        await finish(stream)
    assert proxy.received == GREETING_NOAUTH + REQUEST_NAME


async def test_socks5_with_rfc1929_login() -> None:
    async with ScriptedProxy(*_login(LOGIN), Read(len(REQUEST_NAME)), Send(REPLY_OK)) as proxy:
        stream = await dial(socks5(proxy, username="alice", password="secret"), TARGET)
        await finish(stream)
    assert proxy.received == GREETING_AUTH + LOGIN + REQUEST_NAME


async def test_socks5_login_as_bytes_goes_out_unchanged() -> None:
    """A pluggable transport's arguments: any bytes, and a password of one NUL."""
    login = b"\x01\x0acert=a;b\\=\x01\x00"  # VER=1 ULEN=10 cert=a;b\= PLEN=1 NUL
    async with ScriptedProxy(*_login(login), Read(len(REQUEST_NAME)), Send(REPLY_OK)) as proxy:
        dialer = socks5(proxy, username=b"cert=a;b\\=", password=b"\x00")
        stream = await dial(dialer, TARGET)
        await finish(stream)
    assert proxy.received == GREETING_AUTH + login + REQUEST_NAME


async def test_socks5_label_names_the_proxy_in_messages() -> None:
    async with ScriptedProxy(Read(3), Send(CHOOSE_NONE)) as proxy:
        err = await dial_error(socks5(proxy, label="the obfs4 client"), TARGET)
    assert err.detail == "the obfs4 client requires a login"
    async with ScriptedProxy(Read(3)) as proxy:
        err = await dial_error(socks5(proxy, label="the obfs4 client", timeout=0.2), TARGET)
    assert err.detail == "the obfs4 client did not answer within 0.2s"


async def test_socks5_with_credentials_but_proxy_wants_none() -> None:
    """Offering user/pass does not force it: the proxy may pick no-auth."""
    async with ScriptedProxy(
        Read(4), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Send(REPLY_OK)
    ) as proxy:
        stream = await dial(socks5(proxy, username="alice", password="secret"), TARGET)
        await finish(stream)
    assert proxy.received == GREETING_AUTH + REQUEST_NAME


@pytest.mark.parametrize(
    ("target", "request_bytes"),
    [
        pytest.param(
            Endpoint("149.154.167.51", 443),
            b"\x05\x01\x00\x01\x95\x9a\xa7\x33\x01\xbb",  # v5 CONNECT RSV IP4 ... :443
            id="ipv4",
        ),
        pytest.param(
            Endpoint("2001:db8::1", 80),
            b"\x05\x01\x00\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x00\x50",
            id="ipv6",
        ),
        pytest.param(
            Endpoint("bücher.example", 443),
            b"\x05\x01\x00\x03\x15xn--bcher-kva.example\x01\xbb",  # IDNA on the wire
            id="idna",
        ),
    ],
)
async def test_socks5_address_types(target: Endpoint, request_bytes: bytes) -> None:
    async with ScriptedProxy(
        Read(3), Send(CHOOSE_NOAUTH), Read(len(request_bytes)), Send(REPLY_OK)
    ) as proxy:
        stream = await dial(socks5(proxy), target)
        await finish(stream)
    assert proxy.received == GREETING_NOAUTH + request_bytes


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(REPLY_OK, id="bound-ipv4"),
        pytest.param(b"\x05\x00\x00\x04" + b"\x00" * 16 + b"\x00\x00", id="bound-ipv6"),
        pytest.param(b"\x05\x00\x00\x03\x05proxy\x04\x38", id="bound-name"),
    ],
)
async def test_socks5_payload_right_after_the_reply_is_readable(reply: bytes) -> None:
    """The bound address is consumed exactly: the first destination bytes, arriving in the
    same segment as the reply, belong to the caller."""
    async with ScriptedProxy(
        Read(3), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Send(reply + b"\x16\x03\x03payload")
    ) as proxy:
        stream = await dial(socks5(proxy), TARGET)
        assert await stream.readexactly(10) == b"\x16\x03\x03payload"
        stream.write(b"ping")
        await stream.drain()
        stream.write_eof()
        await finish(stream)
    assert proxy.after == b"ping"


async def test_socks5_login_rejected_is_proxy_auth_failed() -> None:
    async with ScriptedProxy(*_login(LOGIN, LOGIN_FAILED)) as proxy:
        err = await dial_error(socks5(proxy, username="alice", password="secret"), TARGET)
    assert (err.failure, err.op) == (Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE)
    assert "secret" not in str(err)


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param({"username": "alice", "password": "secret"}, id="with"),
    ],
)
async def test_socks5_no_acceptable_method_is_proxy_auth_failed(
    credentials: dict[str, str],
) -> None:
    async with ScriptedProxy(Read(4 if credentials else 3), Send(CHOOSE_NONE)) as proxy:
        err = await dial_error(socks5(proxy, **credentials), TARGET)
    assert (err.failure, err.op) == (Failure.PROXY_AUTH_FAILED, Op.PROXY_HANDSHAKE)


@pytest.mark.parametrize(
    ("code", "failure", "op"),
    [
        pytest.param(0x01, Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, id="01-general"),
        pytest.param(0x02, Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, id="02-not-allowed"),
        pytest.param(0x03, Failure.NETWORK_UNREACHABLE, Op.CONNECT, id="03-net-unreachable"),
        pytest.param(0x04, Failure.HOST_UNREACHABLE, Op.CONNECT, id="04-host-unreachable"),
        pytest.param(0x05, Failure.CONNECTION_REFUSED, Op.CONNECT, id="05-refused"),
        pytest.param(0x06, Failure.TIMEOUT, Op.CONNECT, id="06-ttl-expired"),
        pytest.param(0x07, Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, id="07-command"),
        pytest.param(0x42, Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, id="unknown-code"),
    ],
)
async def test_socks5_reply_codes(code: int, failure: Failure, op: Op) -> None:
    """A refusal from the proxy says what happened beyond it: 05 is the destination
    refusing, during connect, not the proxy failing."""
    reply = bytes([0x05, code, 0x00]) + REPLY_OK[3:]
    async with ScriptedProxy(
        Read(3), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Send(reply)
    ) as proxy:
        err = await dial_error(socks5(proxy), TARGET)
        assert f"proxy {proxy.endpoint} answered" in err.detail
    assert (err.failure, err.op) == (failure, op)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param((Read(3), Send(b"\x04\x00")), id="choice-wrong-version"),
        pytest.param((Read(3), Send(b"\x05\x02")), id="method-not-offered"),
        pytest.param(
            (
                Read(3),
                Send(CHOOSE_NOAUTH),
                Read(len(REQUEST_NAME)),
                Send(b"\x04\x00\x00\x01" + b"\x00" * 6),
            ),
            id="reply-wrong-version",
        ),
        pytest.param(
            (
                Read(3),
                Send(CHOOSE_NOAUTH),
                Read(len(REQUEST_NAME)),
                Send(b"\x05\x00\x00\x09" + b"\x00" * 6),
            ),
            id="reply-unknown-atyp",
        ),
    ],
)
async def test_socks5_protocol_errors(steps: tuple[Read | Send, ...]) -> None:
    async with ScriptedProxy(*steps) as proxy:
        err = await dial_error(socks5(proxy), TARGET)
    assert (err.failure, err.op) == (Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param((Read(3), Close()), id="after-greeting"),
        pytest.param((Read(3), Send(b"\x05"), Close()), id="half-choice"),
        pytest.param(
            (Read(3), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Close()), id="before-reply"
        ),
        pytest.param(
            (Read(3), Send(CHOOSE_NOAUTH), Read(len(REQUEST_NAME)), Send(REPLY_OK[:6]), Close()),
            id="mid-bound-address",
        ),
    ],
)
async def test_socks5_proxy_closes_mid_handshake_is_eof(
    steps: tuple[Read | Send | Close, ...],
) -> None:
    async with ScriptedProxy(*steps) as proxy:
        err = await dial_error(socks5(proxy), TARGET)
    assert (err.failure, err.op) == (Failure.EOF, Op.PROXY_HANDSHAKE)


async def test_socks5_silent_proxy_times_out() -> None:
    async with ScriptedProxy(Read(3)) as proxy:
        err = await dial_error(socks5(proxy, timeout=0.2), TARGET)
    assert (err.failure, err.op) == (Failure.TIMEOUT, Op.PROXY_HANDSHAKE)
    assert "0.2s" in err.detail


async def test_socks5_proxy_not_listening_names_the_proxy() -> None:
    async with ScriptedProxy() as proxy:
        endpoint = proxy.endpoint
    dialer = Socks5Dialer(DirectDialer(), endpoint, handshake_timeout=SAFETY)
    err = await dial_error(dialer, TARGET)
    assert (err.failure, err.op) == (Failure.CONNECTION_REFUSED, Op.CONNECT)
    assert err.detail.startswith(f"proxy {endpoint}: ")


async def test_socks5_name_too_long_for_the_wire_fails_before_connecting() -> None:
    async with ScriptedProxy() as proxy:
        err = await dial_error(socks5(proxy), Endpoint("a" * 256, 443))
    assert (err.failure, err.op) == (Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE)
    assert proxy.connections == 0


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", None, id="only-user"),
        pytest.param(None, "secret", id="only-password"),
        pytest.param("", "secret", id="empty-user"),
        pytest.param("alice", "p" * 256, id="password-too-long"),
    ],
)
def test_socks5_bad_credentials_rejected_at_construction(
    username: str | None, password: str | None
) -> None:
    with pytest.raises(ValueError):
        Socks5Dialer(DirectDialer(), Endpoint("127.0.0.1", 1080), username, password)


def test_socks5_repr_has_no_secrets() -> None:
    dialer = Socks5Dialer(DirectDialer(), Endpoint("127.0.0.1", 1080), "alice", "secret")
    assert repr(dialer) == "Socks5Dialer(127.0.0.1:1080, auth=True)"


# --- SOCKS4a ------------------------------------------------------------------------------

SOCKS4_GRANTED = b"\x00\x5a\x00\x00\x00\x00\x00\x00"  # VN=0 5A PORT IP


def socks4a(proxy: ScriptedProxy, user_id: str = "", timeout: float = SAFETY) -> Socks4aDialer:
    return Socks4aDialer(DirectDialer(), proxy.endpoint, user_id, handshake_timeout=timeout)


@pytest.mark.parametrize(
    ("target", "user_id", "request_bytes"),
    [
        pytest.param(
            TARGET,
            "bob",
            b"\x04\x01\x01\xbb\x00\x00\x00\x01bob\x00example.com\x00",  # v4 CONNECT :443 0.0.0.1
            id="name-socks4a",
        ),
        pytest.param(
            Endpoint("149.154.167.51", 443),
            "",
            b"\x04\x01\x01\xbb\x95\x9a\xa7\x33\x00",  # plain SOCKS4 for an IPv4 literal
            id="ipv4-socks4",
        ),
    ],
)
async def test_socks4a_request_bytes(target: Endpoint, user_id: str, request_bytes: bytes) -> None:
    async with ScriptedProxy(Read(len(request_bytes)), Send(SOCKS4_GRANTED + b"payload")) as proxy:
        stream = await dial(socks4a(proxy, user_id), target)
        assert await stream.readexactly(7) == b"payload"
        await finish(stream)
    assert proxy.received == request_bytes


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        pytest.param(0x5B, Failure.PROXY_REFUSED, id="5B-rejected"),
        pytest.param(0x5C, Failure.PROXY_AUTH_FAILED, id="5C-no-identd"),
        pytest.param(0x5D, Failure.PROXY_AUTH_FAILED, id="5D-identd-mismatch"),
    ],
)
async def test_socks4a_refusals(code: int, failure: Failure) -> None:
    request_length = 8 + 1 + 12
    async with ScriptedProxy(Read(request_length), Send(bytes([0, code]) + b"\x00" * 6)) as proxy:
        err = await dial_error(socks4a(proxy), TARGET)
    assert (err.failure, err.op) == (failure, Op.PROXY_HANDSHAKE)


async def test_socks4a_reply_wrong_version_is_protocol_error() -> None:
    async with ScriptedProxy(Read(21), Send(b"\x05\x5a" + b"\x00" * 6)) as proxy:
        err = await dial_error(socks4a(proxy), TARGET)
    assert err.failure is Failure.PROXY_PROTOCOL_ERROR


async def test_socks4a_closes_mid_reply_is_eof() -> None:
    async with ScriptedProxy(Read(21), Send(b"\x00\x5a\x00"), Close()) as proxy:
        err = await dial_error(socks4a(proxy), TARGET)
    assert (err.failure, err.op) == (Failure.EOF, Op.PROXY_HANDSHAKE)


async def test_socks4a_silent_proxy_times_out() -> None:
    async with ScriptedProxy(Read(21)) as proxy:
        err = await dial_error(socks4a(proxy, timeout=0.2), TARGET)
    assert (err.failure, err.op) == (Failure.TIMEOUT, Op.PROXY_HANDSHAKE)


def test_socks4a_user_id_with_nul_rejected() -> None:
    with pytest.raises(ValueError):
        Socks4aDialer(DirectDialer(), Endpoint("127.0.0.1", 1080), "bo\x00b")


# --- HTTP CONNECT -------------------------------------------------------------------------

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def http(proxy: ScriptedProxy, timeout: float = SAFETY, **kwargs: Any) -> HttpConnectDialer:
    return HttpConnectDialer(DirectDialer(), proxy.endpoint, handshake_timeout=timeout, **kwargs)


HEAD = Read(until=b"\r\n\r\n")


@pytest.mark.parametrize(
    ("target", "credentials", "request_bytes"),
    [
        pytest.param(
            TARGET,
            {},
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            id="name",
        ),
        pytest.param(
            TARGET,
            {"username": "alice", "password": "secret"},
            b"CONNECT example.com:443 HTTP/1.1\r\n"
            b"Host: example.com:443\r\n"
            b"Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n"  # base64("alice:secret")
            b"\r\n",
            id="basic-auth",
        ),
        pytest.param(
            Endpoint("::1", 443),
            {},
            b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            id="ipv6",
        ),
        pytest.param(
            Endpoint("bücher.example", 80),
            {},
            b"CONNECT xn--bcher-kva.example:80 HTTP/1.1\r\nHost: xn--bcher-kva.example:80\r\n\r\n",
            id="idna",
        ),
    ],
)
async def test_http_connect_request_bytes(
    target: Endpoint, credentials: dict[str, str], request_bytes: bytes
) -> None:
    async with ScriptedProxy(HEAD, Send(ESTABLISHED)) as proxy:
        stream = await dial(http(proxy, **credentials), target)
        await finish(stream)
    assert proxy.received == request_bytes


def test_http_basic_token_is_utf8_user_colon_password() -> None:
    dialer = HttpConnectDialer(DirectDialer(), Endpoint("127.0.0.1", 3128), "jörg", "pä:ss")
    token = base64.b64encode("jörg:pä:ss".encode()).decode()
    assert dialer._authorization == f"Proxy-Authorization: Basic {token}\r\n".encode()


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(ESTABLISHED, id="200"),
        pytest.param(b"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n", id="http1.0-with-fields"),
        pytest.param(b"HTTP/1.1 204\r\n\r\n", id="204-no-reason"),
    ],
)
async def test_http_payload_right_after_200_is_readable(response: bytes) -> None:
    """tinyproxy and others may send the first destination bytes in the same segment as the
    200: they must reach the caller, not be swallowed with the head."""
    async with ScriptedProxy(HEAD, Send(response + b"\x16\x03\x03payload")) as proxy:
        stream = await dial(http(proxy), TARGET)
        assert await stream.readexactly(10) == b"\x16\x03\x03payload"
        stream.write(b"ping")
        await stream.drain()
        stream.write_eof()
        await finish(stream)
    assert proxy.after == b"ping"


@pytest.mark.parametrize(
    ("response", "failure", "op"),
    [
        pytest.param(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="x"\r\n\r\n',
            Failure.PROXY_AUTH_FAILED,
            Op.PROXY_HANDSHAKE,
            id="407",
        ),
        pytest.param(
            b"HTTP/1.1 403 Forbidden\r\n\r\n", Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, id="403"
        ),
        pytest.param(
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n", Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE, id="502"
        ),
        pytest.param(
            b"HTTP/1.1 504 Gateway Timeout\r\n\r\n", Failure.TIMEOUT, Op.CONNECT, id="504"
        ),
        pytest.param(
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            Failure.PROXY_PROTOCOL_ERROR,
            Op.PROXY_HANDSHAKE,
            id="not-http",
        ),
        pytest.param(
            b"HTTP/1.1 abc Weird\r\n\r\n",
            Failure.PROXY_PROTOCOL_ERROR,
            Op.PROXY_HANDSHAKE,
            id="bad-status",
        ),
        pytest.param(
            b"HTTP/2 200\r\n\r\n", Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, id="http2"
        ),
    ],
)
async def test_http_connect_refusals(response: bytes, failure: Failure, op: Op) -> None:
    async with ScriptedProxy(HEAD, Send(response)) as proxy:
        err = await dial_error(http(proxy, username="alice", password="secret"), TARGET)
    assert (err.failure, err.op) == (failure, op)
    assert "secret" not in str(err) and "YWxpY2U6c2VjcmV0" not in str(err)


async def test_http_407_says_whether_we_sent_a_login() -> None:
    response = b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"
    async with ScriptedProxy(HEAD, Send(response)) as proxy:
        err = await dial_error(http(proxy), TARGET)
    assert err.failure is Failure.PROXY_AUTH_FAILED
    assert "requires a login" in err.detail


async def test_http_reason_phrase_is_sanitised() -> None:
    response = b"HTTP/1.1 403 Go\x1b[31maway" + b"x" * 200 + b"\r\n\r\n"
    async with ScriptedProxy(HEAD, Send(response)) as proxy:
        err = await dial_error(http(proxy), TARGET)
    assert "\x1b" not in err.detail
    assert len(err.detail) < 200


async def test_http_proxy_closes_mid_head_is_eof() -> None:
    async with ScriptedProxy(HEAD, Send(b"HTTP/1.1 200 Conn"), Close()) as proxy:
        err = await dial_error(http(proxy), TARGET)
    assert (err.failure, err.op) == (Failure.EOF, Op.PROXY_HANDSHAKE)


async def test_http_silent_proxy_times_out() -> None:
    async with ScriptedProxy(HEAD) as proxy:
        err = await dial_error(http(proxy, timeout=0.2), TARGET)
    assert (err.failure, err.op) == (Failure.TIMEOUT, Op.PROXY_HANDSHAKE)


async def test_http_endless_head_is_a_protocol_error() -> None:
    async with ScriptedProxy(
        HEAD, Send(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 20000)
    ) as proxy:
        err = await dial_error(http(proxy), TARGET)
    assert (err.failure, err.op) == (Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", None, id="only-user"),
        pytest.param("al:ice", "secret", id="colon-in-user"),
    ],
)
def test_http_bad_credentials_rejected_at_construction(username: str, password: str | None) -> None:
    with pytest.raises(ValueError):
        HttpConnectDialer(DirectDialer(), Endpoint("127.0.0.1", 3128), username, password)


def test_http_repr_has_no_secrets() -> None:
    dialer = HttpConnectDialer(DirectDialer(), Endpoint("127.0.0.1", 3128), "alice", "secret")
    assert repr(dialer) == "HttpConnectDialer(127.0.0.1:3128, auth=True)"
