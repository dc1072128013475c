"""What a client is told when its destination cannot be reached: the SOCKS reply code or
HTTP status that matches the failure, with the reason in the HTTP body."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import config_text
from tests.support.clients import exchange, open_http_connect
from tests.support.peers import free_port


def socks5_connect(host: str, port: int) -> bytes:
    name = host.encode()
    # v5 1 method no-auth | v5 CONNECT rsv DOMAIN len name port
    return (
        b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")
    )


def socks4a_connect(host: str, port: int) -> bytes:
    # v4 CONNECT port 0.0.0.1 userid="" NUL name NUL
    return b"\x04\x01" + port.to_bytes(2, "big") + b"\x00\x00\x00\x01\x00" + host.encode() + b"\x00"


def http_connect(host: str, port: int) -> bytes:
    return f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


@pytest.fixture
async def silent_proxy():
    """A 'proxy' that accepts and never answers: its route times out in the handshake."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_refused(start_engine) -> None:
    engine = await start_engine(config_text())
    port = free_port()
    reply = await exchange(engine.mixed_address, socks5_connect("127.0.0.1", port))
    assert reply == b"\x05\x00" + b"\x05\x05\x00\x01" + b"\x00" * 6  # 05: connection refused
    reply = await exchange(engine.mixed_address, http_connect("127.0.0.1", port))
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"via direct: connection_refused during connect" in reply
    reply = await exchange(engine.mixed_address, socks4a_connect("127.0.0.1", port))
    assert reply == b"\x00\x5b" + b"\x00" * 6


async def test_timeout(start_engine, silent_proxy) -> None:
    chain = f"socks5://127.0.0.1:{silent_proxy}"
    text = config_text(routes={"slow": chain}, default="slow").replace(
        f'chain = "{chain}"', f'chain = "{chain}"\ntimeout = "300ms"'
    )
    engine = await start_engine(text)
    reply = await exchange(engine.mixed_address, socks5_connect("origin.test", 80))
    assert reply[2:4] == b"\x05\x04"  # 04: host unreachable (SOCKS5 has no "timed out")
    reply = await exchange(engine.mixed_address, http_connect("origin.test", 80))
    assert reply.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"generic_timeout_error during proxy_handshake" in reply


async def test_name_does_not_resolve(start_engine) -> None:
    engine = await start_engine(config_text())
    reply = await exchange(engine.mixed_address, socks5_connect("does-not-exist.invalid", 443))
    assert reply[2:4] == b"\x05\x04"
    reply = await exchange(engine.mixed_address, http_connect("does-not-exist.invalid", 443))
    assert reply.startswith(b"HTTP/1.1 502")
    assert b"during resolve" in reply


async def test_denied_by_default_policy(start_engine, http_origin) -> None:
    text = config_text(default="deny") + (
        '\n[[service]]\nname = "allowed"\ndomains = ["origin.test"]\n'
    )
    engine = await start_engine(text)
    reply = await exchange(engine.mixed_address, socks5_connect("127.0.0.1", http_origin.port))
    assert reply[2:4] == b"\x05\x02"  # 02: not allowed by ruleset
    reply = await exchange(engine.mixed_address, http_connect("127.0.0.1", http_origin.port))
    assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    reply = await exchange(engine.mixed_address, socks4a_connect("127.0.0.1", http_origin.port))
    assert reply[:2] == b"\x00\x5b"
    # ... while the service's own destination goes through
    reader, writer = await open_http_connect(engine.mixed_address, "origin.test", http_origin.port)
    writer.close()


async def test_every_route_failed_names_each(start_engine) -> None:
    dead = free_port()
    text = config_text(routes={"first": f"socks5://127.0.0.1:{dead}", "second": "direct"})
    text += '\n[[service]]\nname = "local"\ncidrs = ["127.0.0.0/8"]\n'
    engine = await start_engine(text)
    closed = free_port()
    reply = await exchange(engine.mixed_address, http_connect("127.0.0.1", closed))
    body = reply.split(b"\r\n\r\n", 1)[1].decode()
    assert body.startswith(f"detour: cannot reach local (127.0.0.1:{closed}): via first: ")
    assert "via second: connection_refused during connect" in body
    # SOCKS5 takes the preferred route's failure: the proxy itself refused the connection
    reply = await exchange(engine.mixed_address, socks5_connect("127.0.0.1", closed))
    assert reply[2:4] == b"\x05\x05"
