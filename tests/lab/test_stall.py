"""A live connection that freezes counts against its route (helper/routing/progress.py): in
the lab's freeze-16k scenario, one frozen download through `direct` sends the next
connection for Telegram through another route, and says why in /status and the TUI."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl

import pytest

from helper.api import status_document
from helper.config import Config, parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from helper.status import ProbeRound
from helper.tui.model import cell
from tests.support.clients import open_socks5
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="module")


def config_with(lab: Lab, *routes: str, stall_timeout: float, stall_close: bool) -> Config:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    chosen = tuple(dataclasses.replace(config.route(name), timeout=2.0) for name in routes)
    probe = dataclasses.replace(
        config.probe,
        first_answer=1.0,
        stall_timeout=stall_timeout,
        stall_close=stall_close,
        stagger=3.0,  # the failing route starts only if the next has not connected by then
    )
    services = tuple(dataclasses.replace(s, routes=routes) for s in config.services)
    return dataclasses.replace(config, routes=chosen, probe=probe, services=services)


async def frozen_download(engine: Engine, lab: Lab):
    context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
    reader, writer = await open_socks5(engine.mixed_address, "web.telegram.org", 443)
    await writer.start_tls(context, server_hostname="web.telegram.org")
    writer.write(b"GET /bytes/262144 HTTP/1.1\r\nHost: web.telegram.org\r\n\r\n")
    return reader, writer


@pytest.mark.parametrize("close", [False, True])
async def test_a_frozen_connection_moves_the_next_one_off_its_route(lab: Lab, close: bool) -> None:
    await lab.set_scenario("freeze-16k")
    config = config_with(lab, "direct", "lab-socks", stall_timeout=0.5, stall_close=close)
    async with Engine(config, probe_on_start=False) as engine:
        health = engine.router.health
        reader, writer = await frozen_download(engine, lab)
        await until(lambda: health.get("telegram", "direct").ok is False)
        frozen = health.get("telegram", "direct")
        assert frozen.failure == "stalled" and frozen.source == "connection"
        kb = int(frozen.diagnosis.removeprefix("frozen_after_").removesuffix("KB"))
        assert 8 <= kb <= 20, frozen.diagnosis
        # Seen where people look: /status and the TUI's cell.
        snapshot = engine.snapshot()
        document = status_document(snapshot)
        telegram = next(s for s in document["services"] if s["name"] == "telegram")
        assert [s["route"] for s in telegram["stalled"]] == ["direct"]
        assert telegram["stalled"][0]["diagnosis"] == frozen.diagnosis
        # (the route is being probed again meanwhile: the cell as it shows between probes)
        snapshot = dataclasses.replace(snapshot, probes=ProbeRound(frozenset(), 0, 0))
        if snapshot.health_of("telegram", "direct").source == "connection":  # (not re-probed)
            text = cell(snapshot, snapshot.service("telegram"), snapshot.route("direct")).text
            assert text == f"frozen after {kb} KB"

        # The next connection for Telegram takes the other route.
        context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
        reader2, writer2 = await open_socks5(engine.mixed_address, "web.telegram.org", 443)
        await writer2.start_tls(context, server_hostname="web.telegram.org")
        writer2.write(b"GET / HTTP/1.1\r\nHost: web.telegram.org\r\n\r\n")
        assert b"hello from web.telegram.org" in await reader2.read(65536)
        (second,) = [c for c in engine.server.connections.values() if c.stats.down < 16384]
        assert second.route == "lab-socks", health.get("telegram", "direct")
        writer2.close()
        # The frozen connection itself: left open unless stall_close says otherwise.
        if close:
            with pytest.raises((ConnectionError, ssl.SSLError)):  # reset: never a clean end
                await asyncio.wait_for(reader.read(), 10)
            await until(lambda: engine.server.open_connections == 0)
        else:
            await until(lambda: engine.server.open_connections == 1)
        writer.close()
