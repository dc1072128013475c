"""Bulk data through an `mtproxy:` route on loopback, checked end to end: an integrity client
(tests/support/integrity.py) whose bytes a wrapper carries as MTProto packets -> detour's
SOCKS5 port -> `mtproxy:` route -> detour's own MTProto endpoint (a second engine, `direct`
to the DC) -> the unwrapper of tests/support/mtproto.py (the "DC") that passes the
packets' payloads to the integrity origin. SIZE each way (64 MiB with DETOUR_FULL_LOAD=1,
4 MiB in make test), sha256-checked, with the client's half-close carried through, for a
plain secret (the client's intermediate framing kept) and an `ee` secret (the client speaks padded
intermediate itself, without padding, so no re-framing touches the raw bytes: re-framing is
for MTProto messages, tests/unit/test_mtproxy.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.conftest import config_text
from tests.support.integrity import run_integrity
from tests.support.mtproto import endpoint_section, start_unwrapper, start_wrapper
from tests.support.origins import start_integrity
from tests.support.sizes import transfer_size
from transports.mtproto import Tag

SIZE = transfer_size(16 << 20)  # 4 MiB in make test, 64 with DETOUR_FULL_LOAD=1
SECRETS = {
    "plain": os.urandom(16).hex(),
    "ee": "ee" + os.urandom(16).hex() + b"mask.test".hex(),
}
DC = "149.154.167.51"  # DC 2's address in the built-in table: what the client dials


@pytest_asyncio.fixture
async def endpoint(start_engine) -> AsyncIterator[tuple[str, int]]:
    """detour's MTProto endpoint, reaching "DC 2" (the unwrapper) directly."""
    origin = await start_integrity()
    dc = await start_unwrapper(origin.address)
    try:
        secrets = ", ".join(f'{name} = "{secret}"' for name, secret in SECRETS.items())
        text = config_text(extra=endpoint_section(secrets, dc.address, "127.0.0.1:9"))
        engine = await start_engine(text, probe_on_start=False)
        assert engine.mtproto is not None
        yield engine.mtproto.address_bound
    finally:
        await dc.stop()
        origin.server.close()


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "tag"), [("plain", Tag.INTERMEDIATE), ("ee", Tag.PADDED)])
async def test_each_way_sha256_with_half_close_through_the_route(
    start_engine, endpoint: tuple[str, int], kind: str, tag: Tag
) -> None:
    host, port = endpoint
    text = config_text(
        routes={"handed": f"mtproxy:{host}:{port};secret={SECRETS[kind]}"},
        extra="""
        [[service]]
        name = "telegram"
        cidrs = ["149.154.160.0/20"]
        routes = ["handed"]
        """,
    )
    user = await start_engine(text, probe_on_start=False)
    wrapper = await start_wrapper(user.mixed_address, (DC, 443), tag=tag)
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, SIZE, SIZE), 600)
    finally:
        await wrapper.stop()
    assert result.ok, result
    assert result.sent == result.received == SIZE
