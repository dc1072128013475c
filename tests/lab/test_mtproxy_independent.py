"""An `mtproxy:` route against an MTProto proxy written apart from detour: mtprotoproxy (PyPI,
run by tests/support/mtprotoproxy_run.py with its DC table pointed at the lab). Telethon ->
detour's SOCKS5 port -> `mtproxy:` route -> mtprotoproxy -> the lab's DC 2, with a plain, a
`dd` and an `ee` secret (the same key: mtprotoproxy tells the forms apart by what the client
sends); the mock DC sees a valid req_pq_multi and Telethon accepts the resPQ. With
mtprotoproxy's "secure only" mode (what `dd` and `ee` proxies run), a client that speaks
abridged still gets through: detour re-frames it as padded intermediate.

Skipped when mtprotoproxy is not installed (`pip install mtprotoproxy`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.lab.lab import Lab
from tests.lab.conftest import free_network
from tests.lab.test_mtproxy_route import MASK_NAME, detour, telethon_connects
from tests.support.mtprotoproxy_run import script
from tests.support.telegram_client import CONNECTIONS

if script() is None:
    pytest.skip("mtprotoproxy is not installed", allow_module_level=True)

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = os.urandom(16).hex()
SECRETS = {"plain": KEY, "dd": "dd" + KEY, "ee": "ee" + KEY + MASK_NAME.encode().hex()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("baseline", network=free_network(kernel=False)) as running:
        yield running


@contextlib.asynccontextmanager
async def mtprotoproxy(lab: Lab, *, secure_only: bool) -> AsyncIterator[tuple[str, int]]:
    options = {
        "port": 0,
        "key": KEY,
        "dcs": [lab.table.address(f"telegram-dc{n}") for n in range(1, 6)],
        "dc_port": 443,
        "tls_domain": MASK_NAME,
        "mask": [lab.table.address("control"), 443],
        "secure_only": secure_only,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.mtprotoproxy_run",
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.startswith(b"ready "), line
        yield "127.0.0.1", int(line.split()[1])
    finally:
        process.kill()
        await process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SECRETS))
async def test_telethon_through_mtprotoproxy(lab: Lab, kind: str, caplog) -> None:
    caplog.set_level(logging.INFO)
    start = len(lab.dc_events.events)
    async with (
        mtprotoproxy(lab, secure_only=kind != "plain") as proxy,
        detour(lab, proxy, SECRETS[kind]) as engine,
    ):
        for connection in ("obfuscated", "abridged"):
            await telethon_connects(lab, engine, CONNECTIONS[connection])
    seen = [e for e in lab.dc_events.events[start:] if e.what == "req_DH_params"]
    assert len(seen) == 2, lab.dc_events.events[start:]
    for dh in seen:
        request, answered = dh.detail["request"], dh.detail["answered"]
        assert dh.dc == 2 and request.nonce == answered.nonce
        p, q = (int.from_bytes(x, "big") for x in (request.p, request.q))
        assert p * q == answered.pq_value  # Telethon accepted the resPQ
    assert "via handed" in caplog.text and "Traceback" not in caplog.text
