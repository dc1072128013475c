"""Telegram through the lab with a real client library: Telethon, through detour's SOCKS5
port, to a lab DC whose address is black-holed. With a `tgws` route detour carries it to the
DC through the web endpoint; the mock DC sees a valid req_pq_multi, answers resPQ, and
Telethon -- having checked the nonce, found the key fingerprint among the keys it ships and
factored pq -- goes on to req_DH_params, which the mock records."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from tests.lab.conftest import free_network
from tests.support.unhurried import unhurried
from tests.support.waiting import until

telethon = pytest.importorskip("telethon")
pytest.importorskip("python_socks")
from telethon.network import connection as telethon_connection  # noqa: E402

from tests.support.telegram_client import (  # noqa: E402
    CONNECTIONS,  # abridged and intermediate are in the clear: tgws obfuscates them
    assert_res_pq_accepted,
    running_engine,
    through_socks,
)
from tests.support.telegram_client import telethon_connects as _connects  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("telegram-dc-blackhole", network=free_network(kernel=False)) as running:
        yield running


@contextlib.asynccontextmanager
async def detour(lab: Lab, route: str | None) -> AsyncIterator[Engine]:
    async with running_engine(lab.helper_config(listen="127.0.0.1:0"), pin=route) as engine:
        yield engine


async def telethon_connects(lab: Lab, engine: Engine, connection: type) -> None:
    """Telethon through detour's SOCKS5 port to the lab's DC 2."""
    await _connects(lab, connection, through_socks(engine))


def events_since(lab: Lab, start: int) -> list:
    return lab.dc_events.events[start:]


@pytest.mark.parametrize("kind", list(CONNECTIONS))
async def test_telethon_reaches_a_black_holed_dc_through_tgws(
    lab: Lab, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = len(lab.dc_events.events)
    async with detour(lab, "tgws") as engine:
        await telethon_connects(lab, engine, CONNECTIONS[kind])
    dh = assert_res_pq_accepted(events_since(lab, start))
    request = dh.detail["request"]
    assert request.fingerprint == dh.detail["fingerprint"]
    assert len(request.encrypted_data) == 256  # data encrypted
    assert "via tgws" in caplog.text and "Traceback" not in caplog.text


# The probe timeout of the test whose verdicts need one (the routes to the black-holed DC
# fail by it): ten times the lab's, as a working route through tgws (TLS, WebSocket and an
# MTProto round trip, the lab's servers in this test's event loop) took longer than the
# lab's 3 s on two cores with a load average of 20. The test waits for tgws's full verdict,
# not for the black-holed routes' timeouts.
PATIENT = 30.0


async def test_without_a_pin_the_probes_send_telegram_to_tgws(lab: Lab) -> None:
    config = unhurried(parse_config(lab.helper_config(listen="127.0.0.1:0")))
    config = dataclasses.replace(config, probe=dataclasses.replace(config.probe, timeout=PATIENT))
    async with running_engine(config) as engine:
        telegram = next(s for s in engine.router.services if s.name == "telegram")
        probing = asyncio.ensure_future(engine.monitor.probe_now(telegram))
        try:
            health = engine.router.health
            await until(
                lambda: (h := health.get("telegram", "tgws")).ok and not h.freeze_unsure, 240
            )
            assert engine.router.active_route(telegram).name == "tgws"
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
        start = len(lab.dc_events.events)
        await telethon_connects(lab, engine, CONNECTIONS["obfuscated"])
    assert "req_DH_params" in [e.what for e in events_since(lab, start)]


async def test_the_full_transport_is_refused_and_says_why(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = len(lab.dc_events.events)
    async with detour(lab, "tgws") as engine:
        await telethon_connects(lab, engine, telethon_connection.ConnectionTcpFull)
    assert events_since(lab, start) == []  # nothing reached the DC
    assert "full transport" in caplog.text
    assert "Traceback" not in caplog.text


async def test_split_client_hello_gets_through_sni_resets(lab: Lab) -> None:
    await lab.set_scenario("telegram-web-sni")
    try:
        for route, reached in (("tgws", False), ("tgws-fragment", True)):
            start = len(lab.dc_events.events)
            async with detour(lab, route) as engine:
                await telethon_connects(lab, engine, CONNECTIONS["obfuscated"])
            whats = [e.what for e in events_since(lab, start)]
            assert ("req_DH_params" in whats) is reached, (route, whats)
    finally:
        await lab.set_scenario("telegram-dc-blackhole")
