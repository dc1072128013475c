"""The domain-fronted tunnel end to end on loopback: detour's `front:` route to a real
`detour relay` (serving TLS itself here; behind a CDN in test_fronted_cdn.py), the bytes,
the half-close, and everything the relay must refuse -- and how it refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from helper.relay.keys import RelayKeys
from helper.relay.server import RelayServer
from tests.support import origins
from tests.support.integrity import run_integrity
from tests.support.relays import Relay, relay_config, running_relay
from tests.support.sizes import transfer_size
from transports import DialError, DialOptions, Endpoint, Failure, Op, parse_chain
from transports.fronted.accesskey import access_token
from transports.guard import LocalAddresses


@pytest.fixture
async def relay(tmp_path: Path, test_ca: origins.TestCA) -> AsyncIterator[Relay]:
    async with running_relay(tmp_path, test_ca) as relay:
        yield relay


async def test_echo_through_the_tunnel(relay: Relay, echo_origin) -> None:
    stream = await relay.dialer().dial(Endpoint("127.0.0.1", echo_origin.port))
    stream.write(b"through the front")
    await stream.drain()
    assert await stream.readexactly(17) == b"through the front"
    stream.close()


async def test_64mib_each_way_and_half_close(relay: Relay, start_engine, integrity_origin) -> None:
    from tests.conftest import config_text
    from tests.support.clients import open_socks5

    text = config_text(routes={"front": "front:" + relay.key.encode()}, default="front")
    text += f'\n[tls]\nextra_ca = ["{relay.ca.ca_path}"]\n'
    engine = await start_engine(text)
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
    size = transfer_size(64 << 20)  # 16 MiB in make test: tests/support/sizes.py
    result = await run_integrity(reader, writer, up=size, down=size, half_close=True)
    assert result.received == size
    assert result.ok_down and result.ok_up


async def test_the_access_key_never_shows(
    relay: Relay, caplog: pytest.LogCaptureFixture, echo_origin
) -> None:
    caplog.set_level(logging.DEBUG)
    chain = parse_chain("front:" + relay.key.encode())
    assert str(chain) == "front:dtr1:***"
    assert "dtr1:e" not in repr(chain)
    stream = await relay.dialer().dial(Endpoint("127.0.0.1", echo_origin.port))
    stream.close()
    secrets = [
        relay.key.encode()[5:40],
        relay.key.token.hex(),
        access_token(relay.key).rsplit(".", 1)[1],
    ]
    assert not any(secret in caplog.text for secret in secrets)


# --- what the relay refuses, and how --------------------------------------------------------


async def raw_get(
    port: int, ca: origins.TestCA, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    context = ca.client_context()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"Host": "relay.test", **headers},
            ssl=context,
        ) as response,
    ):
        body = await response.read()
        fields = {k: v for k, v in response.headers.items() if k.lower() != "date"}
        return response.status, fields, body


def upgrade_headers(cookie: str | None) -> dict[str, str]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if cookie is not None:
        headers["Cookie"] = f"__session={cookie}"
    return headers


async def test_probers_get_the_same_ordinary_website(relay: Relay) -> None:
    path = relay.keys.path
    stale = access_token(relay.key, now=0)  # a token from 1970
    wrong = access_token(dataclasses.replace(relay.key, token=b"x" * 32))
    answers = [
        await raw_get(relay.port, relay.ca, "/no-such-page", {}),
        await raw_get(relay.port, relay.ca, path, {}),  # the right path, a browser
        await raw_get(relay.port, relay.ca, path, upgrade_headers(None)),
        await raw_get(relay.port, relay.ca, path, upgrade_headers(stale)),
        await raw_get(relay.port, relay.ca, path, upgrade_headers(wrong)),
        await raw_get(
            relay.port, relay.ca, "/no-such-page", upgrade_headers(access_token(relay.key))
        ),
    ]
    assert all(answer == answers[0] for answer in answers), answers
    status, headers, body = answers[0]
    assert status == 404 and headers["Server"] == "nginx" and b"Not found" in body
    home = await raw_get(relay.port, relay.ca, "/", {})
    assert home[0] == 200 and b"Ink &amp; Margin" in home[2]


async def test_a_wrong_or_revoked_key_meets_the_decoy(relay: Relay, echo_origin) -> None:
    target = Endpoint("127.0.0.1", echo_origin.port)
    for key in (
        dataclasses.replace(relay.key, token=b"y" * 32),
        dataclasses.replace(relay.key, path="/elsewhere"),
    ):
        with pytest.raises(DialError) as caught:
            await relay.dialer(key).dial(target)
        assert (caught.value.failure, caught.value.op) == (
            Failure.PROXY_REFUSED,
            Op.PROXY_HANDSHAKE,
        )
    relay.keys.revoke("alice")
    with pytest.raises(DialError, match="instead of a WebSocket"):
        await relay.dialer().dial(target)


async def test_a_stolen_token_without_the_certificate_gets_nothing(
    relay: Relay, echo_origin
) -> None:
    other = relay.keys.add_client(
        "bob", Endpoint("127.0.0.1", relay.port), "relay.test", "relay.test"
    )
    # alice's token with bob's certificate and key: the inner TLS says who is really there.
    mixed = dataclasses.replace(relay.key, cert=other.cert, key=other.key)
    with pytest.raises(DialError) as caught:
        await relay.dialer(mixed).dial(Endpoint("127.0.0.1", echo_origin.port))
    assert caught.value.op is Op.PROXY_HANDSHAKE


async def test_a_relay_that_is_not_the_pinned_one_is_refused(relay: Relay, echo_origin) -> None:
    impostor = dataclasses.replace(relay.key, pin="0" * 64)
    with pytest.raises(DialError) as caught:
        await relay.dialer(impostor).dial(Endpoint("127.0.0.1", echo_origin.port))
    assert caught.value.failure is Failure.SSL_INVALID_CERTIFICATE
    assert "pin" in caught.value.detail


async def test_private_destinations_are_refused_and_logged(
    tmp_path: Path, test_ca: origins.TestCA, caplog: pytest.LogCaptureFixture, echo_origin
) -> None:
    caplog.set_level(logging.INFO)
    config = relay_config(tmp_path, test_ca, '[destinations]\nallow = "any"\n')
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    _, port = await server.start()
    try:
        key = keys.add_client("carol", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
        dialer = parse_chain("front:" + key.encode()).build(
            DialOptions(tls=test_ca.client_context())
        )
        for target in (
            Endpoint("127.0.0.1", echo_origin.port),
            Endpoint("10.1.2.3", 22),
            Endpoint("localhost", 22),
        ):
            with pytest.raises(DialError) as caught:
                await dialer.dial(target)
            assert caught.value.failure is Failure.PROXY_REFUSED, caught.value
            assert "at the relay" in caught.value.detail
    finally:
        await server.stop(grace=0.5)
    assert "carol asked for 127.0.0.1" in caplog.text
    assert "refused" in caplog.text


async def test_services_only_by_default(tmp_path: Path, test_ca: origins.TestCA) -> None:
    config = relay_config(tmp_path, test_ca)  # no [destinations]: the built-in services only
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    _, port = await server.start()
    try:
        key = keys.add_client("dave", Endpoint("127.0.0.1", port), "relay.test", "relay.test")
        dialer = parse_chain("front:" + key.encode()).build(
            DialOptions(tls=test_ca.client_context())
        )
        with pytest.raises(DialError, match="not a service this relay serves"):
            await dialer.dial(Endpoint("example.org", 443))
    finally:
        await server.stop(grace=0.5)


# --- a front that tampers with the tunnel ----------------------------------------------------


async def tampering_front(relay_port: int, ca: origins.TestCA, mutate) -> tuple[web.AppRunner, int]:
    """A 'CDN' that forwards WebSocket messages to the relay, passing each through `mutate`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        client = web.WebSocketResponse()
        await client.prepare(request)
        context = ca.client_context()
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"wss://127.0.0.1:{relay_port}{request.path}",
                headers={"Host": "relay.test", "Cookie": request.headers.get("Cookie", "")},
                ssl=context,
            ) as upstream,
        ):
            count = [0]

            async def up() -> None:
                async for message in client:
                    count[0] += 1
                    for data in mutate(count[0], message.data):
                        await upstream.send_bytes(data)
                await upstream.close()

            async def down() -> None:
                async for message in upstream:
                    await client.send_bytes(message.data)
                await client.close()

            await asyncio.gather(up(), down(), return_exceptions=True)
        return client

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=ca.server_context("relay.test", "127.0.0.1")
    )
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda n, data: [data[:-1] + bytes([data[-1] ^ 1])] if n == 5 else [data],
            id="flip-a-bit",
        ),
        pytest.param(lambda n, data: [data, data] if n == 5 else [data], id="replay-a-record"),
    ],
)
async def test_a_tampered_or_replayed_record_closes_the_tunnel(
    relay: Relay, echo_origin, mutate
) -> None:
    runner, port = await tampering_front(relay.port, relay.ca, mutate)
    try:
        key = dataclasses.replace(relay.key, address=Endpoint("127.0.0.1", port))
        stream = await relay.dialer(key).dial(Endpoint("127.0.0.1", echo_origin.port))
        received = b""
        with pytest.raises((ConnectionError, DialError, asyncio.IncompleteReadError, ssl.SSLError)):
            for i in range(10):
                stream.write(f"message {i}\n".encode())
                await stream.drain()
                async with asyncio.timeout(3):
                    chunk = await stream.read(100)
                if not chunk:
                    raise ConnectionResetError("closed")
                received += chunk
        assert b"message 9" not in received  # nothing after the tampering got through
        stream.abort()
    finally:
        await runner.cleanup()


async def test_the_relays_own_addresses_are_refused(
    tmp_path: Path, test_ca: origins.TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service on the relay machine's public address (ssh, say) is not for its clients.
    This machine has no public address to test with: one is made its own for the test."""
    own = ipaddress.ip_address("8.8.8.8")
    monkeypatch.setattr(LocalAddresses, "__contains__", lambda self, address: address == own)
    config = relay_config(tmp_path, test_ca, '[destinations]\nallow = "any"\n')
    keys = RelayKeys(config.state)
    keys.generate()
    server = RelayServer(config, keys)
    assert server.policy.refusal(own) == "an address of this machine"
    assert server.policy.refusal(ipaddress.ip_address("1.1.1.1")) is None
    # A lab stands the internet on this machine's loopback ranges: no own-address check.
    lab = dataclasses.replace(config, public_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    assert RelayServer(lab, keys).policy.refusal(own) is None
