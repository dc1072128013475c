"""Routes through real upstream proxies: dante and microsocks as SOCKS5 (with and without
user/password), tinyproxy as HTTP CONNECT (with and without Basic auth)."""

from __future__ import annotations

import contextlib
import logging

import pytest

from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_http_connect, open_socks5
from transports import DialError, Endpoint, Failure, Op, parse_chain

pytestmark = pytest.mark.peer


UPSTREAMS = {
    "dante": lambda: peers.danted(),
    "dante-auth": lambda: peers.danted("alice", "s3cret-pw"),
    "microsocks": lambda: peers.microsocks(),
    "microsocks-auth": lambda: peers.microsocks("alice", "s3cret-pw"),
    "tinyproxy": lambda: peers.tinyproxy(),
    "tinyproxy-auth": lambda: peers.tinyproxy("alice", "s3cret_pw"),
}


@pytest.fixture(params=list(UPSTREAMS))
def upstream(request: pytest.FixtureRequest):
    with UPSTREAMS[request.param]() as peer:
        yield peer


async def fetch(reader, writer, host: str) -> bytes:
    writer.write(f"GET /via-upstream HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


async def test_route_through_upstream_reaches_origin(upstream, start_engine, http_origin) -> None:
    engine = await start_engine(config_text(routes={"up": upstream.url}, default="up"))
    # The origin's name is resolved by the upstream (remote DNS) for SOCKS5 and HTTP: use
    # a name the upstream can resolve itself.
    reader, writer = await open_socks5(engine.mixed_address, "localhost", http_origin.port)
    body = await fetch(reader, writer, "localhost")
    assert body.startswith(b"HTTP/1.0 200 OK"), body[:200]
    assert body.endswith(b"hello from origin localhost/via-upstream\n")
    assert upstream.process.poll() is None


async def test_http_connect_client_through_upstream_route(
    upstream, start_engine, http_origin
) -> None:
    engine = await start_engine(config_text(routes={"up": upstream.url}, default="up"))
    reader, writer = await open_http_connect(engine.mixed_address, "127.0.0.1", http_origin.port)
    body = await fetch(reader, writer, "127.0.0.1")
    assert body.endswith(b"hello from origin 127.0.0.1/via-upstream\n")


@pytest.mark.parametrize(
    "make_peer",
    [
        pytest.param(lambda: peers.microsocks("alice", "right-pw"), id="microsocks"),
        pytest.param(lambda: peers.danted("alice", "right-pw"), id="dante"),
        pytest.param(lambda: peers.tinyproxy("alice", "right_pw"), id="tinyproxy"),
    ],
)
async def test_wrong_password_is_proxy_auth_failed(make_peer, http_origin) -> None:
    with make_peer() as peer:
        wrong = peer.url.replace("right", "wrong")
        dialer = parse_chain(wrong).build()
        with pytest.raises(DialError) as caught:
            stream = await dialer.dial(Endpoint("127.0.0.1", http_origin.port))
            stream.abort()
        assert caught.value.failure is Failure.PROXY_AUTH_FAILED
        assert caught.value.op is Op.PROXY_HANDSHAKE
        assert peer.password not in str(caught.value)
        assert peer.password.replace("right", "wrong") not in str(caught.value)


@pytest.mark.parametrize(
    "make_peer",
    [
        pytest.param(lambda: peers.microsocks("alice", "pw"), id="microsocks"),
        pytest.param(lambda: peers.tinyproxy("alice", "pw"), id="tinyproxy"),
    ],
)
async def test_missing_login_is_proxy_auth_failed(make_peer, http_origin) -> None:
    with make_peer() as peer:
        anonymous = peer.url.replace("alice:pw@", "")
        with pytest.raises(DialError) as caught:
            stream = (
                await parse_chain(anonymous).build().dial(Endpoint("127.0.0.1", http_origin.port))
            )
            stream.abort()
        assert caught.value.failure is Failure.PROXY_AUTH_FAILED


async def test_wrong_password_reported_to_client_and_log(start_engine, http_origin, caplog) -> None:
    caplog.set_level(logging.INFO)
    with peers.microsocks("alice", "right-pw") as peer:
        wrong = peer.url.replace("right", "wrong")
        engine = await start_engine(config_text(routes={"up": wrong}, default="up"))
        with pytest.raises(ConnectionError, match="status 502"):
            await open_http_connect(engine.mixed_address, "127.0.0.1", http_origin.port)
        assert "proxy_auth_failed during proxy_handshake" in caplog.text
        assert "wrong-pw" not in caplog.text


async def test_upstream_down_fails_over_to_next_route(start_engine, http_origin) -> None:
    dead = peers.free_port()
    text = config_text(
        routes={"dead": f"socks5://127.0.0.1:{dead}", "direct": "direct"}, default="dead"
    )
    text += '\n[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\nroutes = ["dead", "direct"]\n'
    engine = await start_engine(text)
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", http_origin.port)
    body = await fetch(reader, writer, "127.0.0.1")
    assert body.endswith(b"/via-upstream\n")
    with contextlib.suppress(Exception):
        writer.close()
