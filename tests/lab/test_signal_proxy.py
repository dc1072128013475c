"""The Signal proxy endpoint against the lab's Signal mock, in the sni-reset scenario: DPI
resets every TLS connection that names signal.org, unless the ClientHello is split across
records. A "phone" -- the standard library's ssl, outer TLS to the endpoint that checks its
certificate, inner TLS to chat.signal.org checked against the lab CA -- reaches the mock by
name through the endpoint: through tls-fragment once probing made it the active route, and
when the first route tried is direct (reset) and the ClientHello is carried again through
the next one."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.events import ConnectionOpened, Subscription
from helper.lab.lab import Lab
from tests.lab.conftest import free_network
from tests.support.sizes import transfer_size

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROUTES = ("direct", "tls-fragment")
PROXY_NAME = "signal-proxy.lab.test"
SIZE = transfer_size(16 << 20)  # 4 MiB in make test, 64 with DETOUR_FULL_LOAD=1


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("sni-reset", network=free_network(kernel=False)) as userland:
        yield userland


def signal_config(lab: Lab) -> Config:
    cert, key = lab.ca.issue(PROXY_NAME)
    text = lab.helper_config(listen="127.0.0.1:0")
    text += f'\n[signal_proxy]\nlisten = "127.0.0.1:0"\ncertificate = "{cert}"\nkey = "{key}"\n'
    config = parse_config(text, "lab config")
    routes = tuple(dataclasses.replace(config.route(name), timeout=2.0) for name in ROUTES)
    services = tuple(dataclasses.replace(s, routes=ROUTES) for s in config.services)
    return dataclasses.replace(config, routes=routes, services=services)


@pytest_asyncio.fixture(loop_scope="module")
async def engine(lab: Lab) -> AsyncIterator[Engine]:
    engine = Engine(signal_config(lab), probe_on_start=False)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def https_through_proxy(
    lab: Lab, engine: Engine, method: str, path: str, body: bytes = b""
) -> tuple[bytes, bytes]:
    """One HTTPS request to chat.signal.org through the endpoint: (status line, body)."""
    assert engine.signal is not None
    port = engine.signal.sockets[0][1]
    outer = ssl.create_default_context(cafile=str(lab.ca.ca_path))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=outer, server_hostname=PROXY_NAME, limit=1 << 20
    )
    try:
        inner = ssl.create_default_context(cafile=str(lab.ca.ca_path))
        await writer.start_tls(inner, server_hostname="chat.signal.org")
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: chat.signal.org\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        async with asyncio.timeout(300):
            status = await reader.readline()
            length = None
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            assert length is not None, status
            payload = await reader.readexactly(length)
        return status.strip(), payload
    finally:
        writer.close()


async def next_opened(events: Subscription) -> ConnectionOpened:
    while True:
        event = await asyncio.wait_for(events.get(), 10)
        if isinstance(event, ConnectionOpened):
            return event


async def test_the_phone_reaches_the_mock_through_the_active_evasion_route(
    lab: Lab, engine: Engine
) -> None:
    signal = next(s for s in engine.router.services if s.name == "signal")
    await engine.monitor.probe_now(signal)  # direct: reset; tls-fragment: works
    active = engine.router.active_route(signal)
    assert active is not None and active.name == "tls-fragment"
    events = engine.events.subscribe()
    status, body = await https_through_proxy(lab, engine, "GET", "/")
    assert status == b"HTTP/1.1 200 OK"
    assert body == b"hello from chat.signal.org (lab)\n"
    opened = await next_opened(events)
    assert (opened.target, opened.service, opened.route) == (
        "chat.signal.org:443",
        "signal",
        "tls-fragment",
    )
    events.close()


async def test_a_reset_on_the_first_route_is_carried_through_the_next(
    lab: Lab, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "detour.proxy")
    # Nothing probed: direct comes first, DPI resets the inner ClientHello, and the endpoint
    # sends it again through tls-fragment; the phone only sees the answer.
    signal = next(s for s in engine.router.services if s.name == "signal")
    assert engine.router.active_route(signal) is None
    events = engine.events.subscribe()
    status, body = await https_through_proxy(lab, engine, "GET", "/")
    assert status == b"HTTP/1.1 200 OK" and body.startswith(b"hello from chat.signal.org")
    opened = await next_opened(events)
    assert (opened.target, opened.route) == ("chat.signal.org:443", "tls-fragment")
    assert "chat.signal.org:443 via direct" in caplog.text
    assert "trying tls-fragment" in caplog.text
    events.close()


async def test_large_transfers_both_ways_are_intact(lab: Lab, engine: Engine) -> None:
    """SIZE each way (16 MiB; 64 MiB with DETOUR_FULL_LOAD=1, 4 MiB in make test) through
    the endpoint and the route that evades the DPI (tls-fragment: direct is reset), every
    byte checked."""
    signal = next(s for s in engine.router.services if s.name == "signal")
    await engine.monitor.probe_now(signal)
    active = engine.router.active_route(signal)
    assert active is not None and active.name == "tls-fragment"
    events = engine.events.subscribe()
    status, body = await https_through_proxy(lab, engine, "GET", f"/bytes/{SIZE}")
    assert status == b"HTTP/1.1 200 OK" and len(body) == SIZE
    # The mock repeats one random 4 KiB block: every byte must match its place in it.
    block = body[:4096]
    assert body == block * (SIZE // 4096)
    upload = os.urandom(SIZE)
    status, body = await https_through_proxy(lab, engine, "POST", "/digest", upload)
    assert status == b"HTTP/1.1 200 OK"
    assert body == f"{SIZE} {hashlib.sha256(upload).hexdigest()}\n".encode()
    for _ in range(2):
        assert (await next_opened(events)).route == "tls-fragment"
    events.close()
