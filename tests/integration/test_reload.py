"""Engine.reload in-process: what a reload reports, that connections keep the router they
started with, and that the old router's resources close when its last connection ends."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from helper.config import Config, parse_config
from helper.engine import _RELOADABLE, Engine, _restart_sections, describe_changes
from helper.routing import RouteHealth
from tests.conftest import config_text
from tests.support.clients import open_socks5


def config(routes: dict[str, str], extra: str = "", listen: str = "127.0.0.1:0"):
    text = config_text(routes=routes, extra=extra).replace("127.0.0.1:0", listen)
    return parse_config(text, "test config")


def test_describe_changes() -> None:
    old = config({"a": "direct", "b": "tlsfrag:sni"})
    assert describe_changes(old, old) == ([], [])
    swapped = config({"b": "tlsfrag:sni", "a": "direct"})
    assert describe_changes(old, swapped) == (["route order: b, a", "default policy: a -> b"], [])
    edited = config(
        {"a": "direct", "c": "split:2", "b": "tlsfrag:1"},
        extra='[[service]]\nname = "x"\ndomains = ["x.test"]\n[probe]\ninterval = "1m"\n',
        listen="127.0.0.1:1081",
    )
    changed, restart = describe_changes(old, edited)
    assert changed == [
        "routes added: c",
        "routes changed: b",
        "services added: x",
        "[probe] settings",
    ]
    assert restart == ["listen.mixed"]


def test_every_config_section_is_either_reloaded_or_needs_a_restart() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields >= _RELOADABLE  # a renamed section would silently need a restart
    assert "listen" in _restart_sections()
    assert set(_restart_sections()) == fields - _RELOADABLE


def test_describe_changes_never_shows_a_secret() -> None:
    old = config({"up": "socks5://u:hunter2@127.0.0.1:1080"})
    new = config({"up": "socks5://u:hunter3@127.0.0.1:1080"})
    changed, _ = describe_changes(old, new)
    assert changed == ["routes changed: up"]


async def test_connections_keep_their_router_and_its_resources_close_after_them(
    start_engine, echo_origin
) -> None:
    engine = await start_engine(config({"a": "direct"}), probe_on_start=False)
    old_router = engine.router
    closed = asyncio.Event()
    engine._generation.resources.callback(closed.set)
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"

    await engine.reload(config({"b": "direct"}))
    assert engine.router is not old_router
    assert [r.name for r in engine.router.routes] == ["b"]
    await asyncio.sleep(0.1)
    assert not closed.is_set()  # the connection still uses the old router
    writer.write(b"two")  # ... and goes on
    assert await reader.readexactly(3) == b"two"

    new_reader, new_writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    new_writer.write(b"new")
    assert await new_reader.readexactly(3) == b"new"
    assert {c.route for c in engine.server.connections.values()} == {"a", "b"}

    writer.close()
    await asyncio.wait_for(closed.wait(), 10)
    new_writer.close()


async def test_without_connections_the_old_resources_close_at_once(start_engine) -> None:
    engine = await start_engine(config({"a": "direct"}), probe_on_start=False)
    closed = asyncio.Event()
    engine._generation.resources.callback(closed.set)
    await engine.reload(config({"a": "direct"}))
    await asyncio.wait_for(closed.wait(), 10)


async def test_health_carries_over_for_unchanged_routes(start_engine) -> None:
    engine = await start_engine(config({"a": "direct", "b": "tlsfrag:1"}), probe_on_start=False)
    engine.router.health.set("svc", "a", RouteHealth(ok=True))
    engine.router.health.set("svc", "b", RouteHealth(ok=False))
    engine.router.disable("b")
    await engine.reload(config({"a": "direct", "b": "tlsfrag:2"}))
    assert engine.router.health.get("svc", "a").ok is True
    assert engine.router.health.get("svc", "b").ok is None  # another chain: not known
    assert engine.router.disabled == {"b"}


async def test_a_reload_that_cannot_build_keeps_the_old_config(
    start_engine, test_ca, tmp_path: Path
) -> None:
    engine = await start_engine(config({"a": "direct"}), probe_on_start=False)
    router = engine.router
    ca = tmp_path / "ca.pem"
    shutil.copy(test_ca.ca_path, ca)
    new = config({"b": "direct"}, extra=f'[tls]\nextra_ca = ["{ca}"]\n')
    ca.unlink()  # gone between reading the file and building the routes
    with pytest.raises(OSError):
        await engine.reload(new)
    assert engine.router is router
    assert engine.monitor.router is router


async def test_stop_closes_the_resources_of_a_config_still_in_use(echo_origin) -> None:
    engine = Engine(config({"a": "direct"}), probe_on_start=False)
    await engine.start()
    closed = asyncio.Event()
    engine._generation.resources.callback(closed.set)
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"
    await engine.reload(config({"b": "direct"}))
    await engine.stop()  # the old config's connection is cut, its resources closed
    assert closed.is_set()
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            while await reader.read(100):
                pass
    writer.close()


async def test_a_reload_reaches_every_listener(start_engine) -> None:
    text = config_text().replace(
        'handshake_timeout = "2s"\n', 'handshake_timeout = "2s"\ntransparent = "127.0.0.1:0"\n'
    )
    engine = await start_engine(text, probe_on_start=False)
    assert engine.transparent is not None
    assert engine.server.listeners == [engine.listener, engine.transparent]
    new = parse_config(text.replace('name = "direct"', 'name = "direct2"'), "test config")
    changed, restart = describe_changes(engine.config, new)
    await engine.reload(new)
    assert engine.server.router is engine.router  # every listener's new connections
    assert [route.name for route in engine.router.routes] == ["direct2"]
    assert restart == [] and "routes added: direct2" in changed


async def test_reloads_in_a_row_while_connections_come_and_go(start_engine, echo_origin) -> None:
    engine = await start_engine(config({"a": "direct"}), probe_on_start=False)
    closed: list[asyncio.Event] = []

    def track() -> None:
        event = asyncio.Event()
        engine._generation.resources.callback(event.set)
        closed.append(event)

    track()

    async def client(n: int) -> None:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
        for i in range(5):
            message = f"{n}:{i};".encode()
            writer.write(message)
            assert await reader.readexactly(len(message)) == message
            await asyncio.sleep(0.01)
        writer.close()

    clients = [asyncio.ensure_future(client(n)) for n in range(20)]
    for n in range(10):
        await engine.reload(config({f"r{n}": "direct", "a": "direct"}))
        track()
        await asyncio.sleep(0.005)
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    # Every config but the running one has closed its resources.
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in closed[:-1])), 10)
    assert not closed[-1].is_set()
    assert not engine._old
