"""Telethon (PyPI: a real Telegram client library, not detour's code) against the lab's DC 2,
for the lab's Telegram tests (tgws, detour's MTProto endpoint, `mtproxy:` routes): the client
set-up, detour's engine with a pinned route, and the check that the mock DC got a valid
req_pq_multi and that Telethon accepted the resPQ.

Test modules call `pytest.importorskip("telethon")` (and "python_socks" for SOCKS) before
importing this module, which imports Telethon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from telethon import TelegramClient
from telethon.network import connection as telethon_connection
from telethon.sessions import MemorySession

from helper.config import Config, parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from helper.lab.telegram import server_key_fingerprint

CONNECTIONS = {
    "obfuscated": telethon_connection.ConnectionTcpObfuscated,  # what Telegram's apps send
    "abridged": telethon_connection.ConnectionTcpAbridged,  # in the clear
    "intermediate": telethon_connection.ConnectionTcpIntermediate,
}
MTPROXY = telethon_connection.ConnectionTcpMTProxyRandomizedIntermediate  # a `dd` proxy


@contextlib.asynccontextmanager
async def running_engine(text: str | Config, pin: str | None = None) -> AsyncIterator[Engine]:
    """detour from config `text` (or a parsed config), no probes at start; `pin`: the route
    the telegram service takes (as the terminal UI's "p" does)."""
    config = parse_config(text) if isinstance(text, str) else text
    engine = Engine(config, probe_on_start=False)
    await engine.start()
    if pin is not None:
        engine.router.pin("telegram", pin)
    try:
        yield engine
    finally:
        await engine.stop()


def through_socks(engine: Engine) -> tuple[str, str, int]:
    """Telethon's `proxy=` for detour's SOCKS5 port."""
    host, port = engine.mixed_address
    return ("socks5", host, port)


async def telethon_connects(
    lab: Lab,
    connection: type,
    proxy: tuple[Any, ...],
) -> None:
    """Telethon's connect() to the lab's DC 2 through `proxy` (`through_socks(engine)`, or
    `(host, port, secret)` with the MTPROXY connection); it ends when the mock DC closes
    after req_DH_params (the mock holds no private key to go on)."""
    session = MemorySession()
    session.set_dc(2, lab.table.address("telegram-dc2"), 443)  # a proxy reads the DC id
    client = TelegramClient(
        session,
        api_id=1,
        api_hash="0" * 32,
        connection=connection,
        proxy=proxy,
        connection_retries=0,
        retry_delay=0,
        timeout=5,
        receive_updates=False,
    )
    try:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            await asyncio.wait_for(client.connect(), 30)
    finally:
        await client.disconnect()


def assert_res_pq_accepted(seen: list) -> Any:
    """The DC events since the client started (`lab.dc_events.events[start:]`): a valid
    req_pq_multi to DC 2, then req_DH_params showing Telethon accepted the resPQ -- the same
    nonces, pq factored, the key fingerprint among those it ships. Returns the
    req_DH_params event."""
    assert [e.what for e in seen][:2] == ["req_pq_multi", "req_DH_params"], seen
    pq, dh = seen[0], seen[1]
    assert pq.dc == dh.dc == 2
    request, answered = dh.detail["request"], dh.detail["answered"]
    assert request.nonce == answered.nonce == pq.detail["nonce"]
    assert request.server_nonce == answered.server_nonce
    p, q = (int.from_bytes(x, "big") for x in (request.p, request.q))
    assert (p, q) == dh.detail["primes"] and p * q == answered.pq_value
    assert request.fingerprint == server_key_fingerprint()
    return dh
