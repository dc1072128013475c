"""The WhatsApp proxy endpoint against the lab: a "phone" connects to each port (TLS with the
proxy's self-signed certificate on the TLS port), reaches the lab's WhatsApp mock through the
whatsapp service's active route -- here sni-reset, where direct fails its probe and
tls-fragment is active -- with every byte intact both ways; clients outside listen.allow and
over the limits are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.events import ConnectionClosed, ConnectionOpened, Event, Subscription
from helper.lab.lab import Lab
from tests.lab.conftest import free_network

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROUTES = ("direct", "tls-fragment")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("sni-reset", network=free_network(kernel=False)) as userland:
        yield userland


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DETOUR_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def whatsapp_config(lab: Lab, extra: str = "", section: str = "") -> Config:
    """The lab's config with two routes, and the WhatsApp proxy on loopback, any free ports."""
    text = lab.helper_config(listen="127.0.0.1:0")
    if extra:  # it brings its own [listen]
        text = text.replace('[listen]\nmixed = "127.0.0.1:0"\n', "", 1)
    keys = {
        "listen": '"127.0.0.1"',
        "tls_port": "0",
        "chat_port": "0",
        "http_port": "0",
        "media_ports": "[0]",
    }
    for line in section.splitlines():  # the section's own keys win
        key, value = line.split("=", 1)
        keys[key.strip()] = value.strip()
    body = "".join(f"{key} = {value}\n" for key, value in keys.items())
    text += f"\n{extra}\n[whatsapp_proxy]\n{body}"
    config = parse_config(text, "lab config")
    routes = tuple(dataclasses.replace(config.route(name), timeout=2.0) for name in ROUTES)
    services = tuple(dataclasses.replace(s, routes=ROUTES) for s in config.services)
    return dataclasses.replace(config, routes=routes, services=services)


async def started(lab: Lab, extra: str = "", section: str = "") -> Engine:
    engine = Engine(whatsapp_config(lab, extra, section), probe_on_start=False)
    await engine.start()
    return engine


async def talk(
    address: tuple[str, int],
    payload: bytes,
    *,
    tls: bool = False,
    local: str | None = None,
) -> tuple[bytes, bytes | None]:
    """Send `payload`, read as many bytes back; returns (answer, the server's certificate)."""
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # as the app: it does not check the proxy's certificate
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        *address, ssl=context, local_addr=(local, 0) if local else None, limit=1 << 20
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        writer.write(payload)
        async with asyncio.timeout(10):
            answer = await reader.readexactly(len(payload))
        return answer, cert
    finally:
        writer.close()


async def next_connection_event(events: Subscription) -> Event:
    """The next connection event (route changes may come in between)."""
    while True:
        event = await asyncio.wait_for(events.get(), 10)
        if isinstance(event, ConnectionOpened | ConnectionClosed):
            return event


async def test_every_port_reaches_the_mock_through_the_active_route(lab: Lab, state: Path) -> None:
    engine = await started(lab)
    try:
        whatsapp = next(s for s in engine.router.services if s.name == "whatsapp")
        await engine.monitor.probe_now(whatsapp)  # direct: reset; tls-fragment: works
        active = engine.router.active_route(whatsapp)
        assert active is not None and active.name == "tls-fragment"
        events = engine.events.subscribe()
        assert engine.whatsapp is not None
        payload = random.Random(5222).randbytes(300_000)
        for kind, target in (
            ("tls", "g.whatsapp.net:5222"),
            ("chat", "g.whatsapp.net:5222"),
            ("http", "g.whatsapp.net:80"),
            ("media", "whatsapp.net:443"),
        ):
            address = ("127.0.0.1", engine.whatsapp.port(kind))
            answer, cert = await talk(address, payload, tls=kind == "tls")
            assert answer == payload, kind
            opened = await next_connection_event(events)
            assert isinstance(opened, ConnectionOpened)
            assert (opened.target, opened.service, opened.route) == (
                target,
                "whatsapp",
                "tls-fragment",
            )
            closed = await next_connection_event(events)
            assert isinstance(closed, ConnectionClosed) and closed.id == opened.id
            assert (closed.up, closed.down) == (len(payload), len(payload))
            if kind == "tls":
                # The self-signed certificate made on first use, kept in the state directory.
                kept = ssl.PEM_cert_to_DER_cert((state / "whatsapp-proxy/cert.pem").read_text())
                assert cert == kept
                assert oct(os.stat(state / "whatsapp-proxy/key.pem").st_mode & 0o777) == "0o600"
        events.close()
    finally:
        await engine.stop()


async def test_open_connections_show_beside_the_mixed_listeners(lab: Lab, state: Path) -> None:
    engine = await started(lab)
    try:
        assert engine.whatsapp is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", engine.whatsapp.port("chat"))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        [row] = engine.server.connections.values()
        assert row.protocol == "whatsapp-chat"
        assert str(row.target) == "g.whatsapp.net:5222"
        assert row.service == "whatsapp" and row.route in ROUTES
        assert (row.stats.up, row.stats.down) == (4, 4)
        writer.close()
        for _ in range(100):
            if not engine.server.connections:
                break
            await asyncio.sleep(0.05)
        assert not engine.server.connections
    finally:
        await engine.stop()


async def test_clients_outside_the_allow_list_are_refused(lab: Lab, state: Path) -> None:
    # Only 127.0.0.2 may use the proxy (a loopback listener with an allow-list keeps to it).
    engine = await started(lab, extra='[listen]\nmixed = "127.0.0.1:0"\nallow = ["127.0.0.2/32"]')
    try:
        assert engine.whatsapp is not None
        address = ("127.0.0.1", engine.whatsapp.port("chat"))
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await talk(address, b"hello", local="127.0.0.1")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
            await talk(("127.0.0.1", engine.whatsapp.port("tls")), b"hi", tls=True)
        answer, _ = await talk(address, b"hello", local="127.0.0.2")
        assert answer == b"hello"
    finally:
        await engine.stop()


async def test_connections_over_the_per_client_limit_are_refused(lab: Lab, state: Path) -> None:
    engine = await started(lab, section="max_per_client = 1")
    try:
        assert engine.whatsapp is not None
        address = ("127.0.0.1", engine.whatsapp.port("chat"))
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.readexactly(3), 10) == b"one"
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await talk(address, b"two")
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the first one's place frees when it ends
            if not engine.server.connections:
                break
            await asyncio.sleep(0.05)
        answer, _ = await talk(address, b"three")
        assert answer == b"three"
    finally:
        await engine.stop()


async def test_a_port_in_use_is_named_and_nothing_stays_open(lab: Lab, state: Path) -> None:
    taken = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    engine = Engine(whatsapp_config(lab, section=f"media_ports = [{port}]"), probe_on_start=False)
    try:
        with pytest.raises(OSError) as err:
            await engine.start()
        assert f"whatsapp_proxy.media_ports 127.0.0.1:{port}:" in str(err.value)
        assert engine.listener.sockets == [] and engine.whatsapp.sockets == []
    finally:
        taken.close()
        await taken.wait_closed()
        await engine.stop()


async def test_connections_over_the_total_limit_are_refused(lab: Lab, state: Path) -> None:
    engine = await started(lab, section="max_connections = 1")
    try:
        assert engine.whatsapp is not None
        address = ("127.0.0.1", engine.whatsapp.port("media"))
        reader, writer = await asyncio.open_connection(*address, local_addr=("127.0.0.1", 0))
        writer.write(b"one")
        assert await asyncio.wait_for(reader.readexactly(3), 10) == b"one"
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await talk(address, b"two", local="127.0.0.3")  # another client: over the total
        writer.close()
        await writer.wait_closed()
    finally:
        await engine.stop()


async def test_a_reload_and_a_drain_leave_an_open_connection_alone(lab: Lab, state: Path) -> None:
    engine = await started(lab)
    try:
        assert engine.whatsapp is not None
        port = engine.whatsapp.port("chat")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        old = engine.router

        await engine.reload(whatsapp_config(lab))
        assert engine.router is not old
        assert engine.server.router is engine.router  # for new connections
        writer.write(b"pong")  # the open one goes on, on the router it started with
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"pong"

        drain = asyncio.ensure_future(engine.drain(30))
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):  # the drain stopped accepting
            await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"more")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"more"
        assert not drain.done()
        writer.close()
        assert await asyncio.wait_for(drain, 10) == 0  # it ended: nothing left to cut
    finally:
        await engine.stop()
