"""Failing over in the lab: a client's connection survives a blocked route without noticing,
rules switched on while connections are open cut none of them, and route health follows."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import subprocess

import pytest

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from tests.support.clients import open_socks5
from tests.support.peers import require_peer

pytestmark = pytest.mark.asyncio(loop_scope="module")


def config_with(lab: Lab, *routes: str, first_answer: float = 1.0) -> Config:
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    chosen = tuple(dataclasses.replace(config.route(name), timeout=2.0) for name in routes)
    probe = dataclasses.replace(config.probe, first_answer=first_answer)
    services = tuple(dataclasses.replace(s, routes=routes) for s in config.services)
    return dataclasses.replace(config, routes=chosen, probe=probe, services=services)


async def curl_through(engine: Engine, lab: Lab, url: str) -> subprocess.CompletedProcess[str]:
    host, port = engine.mixed_address
    return await asyncio.to_thread(
        subprocess.run,
        [require_peer("curl", "curl"), "-sS", "--max-time", "8", "--socks5-hostname",
         f"{host}:{port}", "--cacert", str(lab.ca.ca_path), url],
        capture_output=True,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    "scenario, routes",
    [
        ("sni-reset", ("direct", "tls-fragment")),  # reset after the ClientHello
        ("ip-blackhole", ("direct", "lab-socks")),  # silence (userland) or no SYN-ACK (netns)
        ("allow-list", ("direct", "doh")),  # nothing works: the client is told
    ],
)
async def test_the_client_never_sees_the_blocked_route(
    lab: Lab, scenario: str, routes: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await lab.set_scenario(scenario)
    async with Engine(config_with(lab, *routes), probe_on_start=False) as engine:
        result = await curl_through(engine, lab, "https://web.telegram.org/")
    if scenario == "allow-list":
        assert result.returncode != 0
        return
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello from web.telegram.org")
    assert f"via {routes[1]}" in caplog.text


async def test_a_rule_switched_on_cuts_no_open_connection(lab: Lab) -> None:
    await lab.set_scenario("baseline")
    async with Engine(config_with(lab, "direct", "tls-fragment"), probe_on_start=False) as engine:
        context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
        reader, writer = await open_socks5(engine.mixed_address, "web.telegram.org", 443)
        await writer.start_tls(context, server_hostname="web.telegram.org")
        writer.write(b"GET /one HTTP/1.1\r\nHost: web.telegram.org\r\n\r\n")
        assert b"hello from web.telegram.org" in await reader.read(4096)

        await lab.set_scenario("sni-reset")  # the censor now resets web.telegram.org ...
        new = await curl_through(engine, lab, "https://web.telegram.org/new")  # ... new: retried
        assert new.returncode == 0, new.stderr

        writer.write(b"GET /two HTTP/1.1\r\nHost: web.telegram.org\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).endswith(b"hello from web.telegram.org (lab)\n")  # old: intact
        writer.close()
    await lab.set_scenario("baseline")


async def test_repeated_resets_mark_the_route_failing(lab: Lab) -> None:
    await lab.set_scenario("sni-reset")
    async with Engine(config_with(lab, "direct", "tls-fragment"), probe_on_start=False) as engine:
        for _ in range(3):
            result = await curl_through(engine, lab, "https://web.telegram.org/")
            assert result.returncode == 0, result.stderr
        health = engine.router.health.get("telegram", "direct")
        assert (health.ok, health.failure, health.op) == (
            False,
            "connection_reset",
            "tls_handshake",
        )
        telegram = engine.router.services.services[0]
        order = engine.router.health.order("telegram", engine.router.candidates(telegram))
        assert [r.name for r in order] == ["tls-fragment", "direct"]  # direct goes last now
        # ... and the failures asked for a re-probe, which finds what works:
        for _ in range(100):
            if engine.router.active_route(telegram) is not None:
                break
            await asyncio.sleep(0.1)
        assert engine.router.active_route(telegram).name == "tls-fragment"
    await lab.set_scenario("baseline")
