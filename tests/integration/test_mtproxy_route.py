"""Bulk data through an `mtproxy:` route on loopback, checked end to end: an integrity client
(tests/support/integrity.py) whose bytes a wrapper carries as MTProto packets -> detour's
SOCKS5 port -> `mtproxy:` route -> detour's own MTProto endpoint (a second engine, `direct`
to the DC) -> a raw-bytes DC mock that unwraps the packets for the integrity origin. SIZE
each way (64 MiB with DETOUR_FULL_LOAD=1), sha256-checked, with the client's half-close
carried through, for a plain secret (the client's intermediate framing kept) and an `ee`
secret (the client speaks padded intermediate itself, without padding, so no re-framing
touches the raw bytes: re-framing is for MTProto messages, tests/unit/test_mtproxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.conftest import config_text
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.origins import start_integrity
from transports.mtproto import INIT_LEN, PacketReader, Tag, accept, encode_packet, initiate

FULL_LOAD = os.environ.get("DETOUR_FULL_LOAD", "").strip() not in ("", "0")
SIZE = (64 if FULL_LOAD else 16) << 20
PACKET = 256 * 1024
SECRETS = {
    "plain": os.urandom(16).hex(),
    "ee": "ee" + os.urandom(16).hex() + b"mask.test".hex(),
}
DC = "149.154.167.51"  # DC 2's address in the built-in table: what the client dials


def _no_padding(n: int) -> bytes:
    return bytes(n)


async def _pump(src, dst, convert) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await src.read(1 << 20):
            dst.write(convert(data))
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


def _unwrapping(reader: PacketReader, decrypt):
    return lambda data: b"".join(reader.feed(decrypt(data)))


def _wrapping(tag: Tag, encrypt):
    def wrap(data: bytes) -> bytes:
        chunks = [data[i : i + PACKET] for i in range(0, len(data), PACKET)]
        return encrypt(b"".join(encode_packet(tag, c, urandom=_no_padding) for c in chunks))

    return wrap


@contextlib.asynccontextmanager
async def serving(handle) -> AsyncIterator[tuple[str, int]]:
    tasks: set[asyncio.Task] = set()

    def accepted(reader, writer) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, limit=1 << 20)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        for task in tasks:
            task.cancel()


def dc_mock(origin: tuple[str, int]):
    """A DC that takes any obfuscated2 stream and passes its packets' payloads on (no padding
    either way, so raw bytes come through unchanged)."""

    async def handle(reader, writer) -> None:
        try:
            header, ob = accept(await reader.readexactly(INIT_LEN))
            up_reader, up_writer = await asyncio.open_connection(*origin, limit=1 << 20)
        except (ValueError, OSError, asyncio.IncompleteReadError):
            writer.close()
            return
        try:
            await asyncio.gather(
                _pump(reader, up_writer, _unwrapping(PacketReader(header.tag), ob.decrypt)),
                _pump(up_reader, writer, _wrapping(header.tag, ob.encrypt)),
                return_exceptions=True,
            )
        finally:
            up_writer.close()
            writer.close()

    return handle


def client_wrapper(socks: tuple[str, int], tag: Tag):
    """Plain connections carried to DC 2 through detour's SOCKS5 port as MTProto."""

    async def handle(reader, writer) -> None:
        try:
            mt_reader, mt_writer = await open_socks5(socks, DC, 443)
        except OSError:
            writer.close()
            return
        init, ob = initiate(tag, 2)
        mt_writer.write(init)
        try:
            await asyncio.gather(
                _pump(reader, mt_writer, _wrapping(tag, ob.encrypt)),
                _pump(mt_reader, writer, _unwrapping(PacketReader(tag), ob.decrypt)),
                return_exceptions=True,
            )
        finally:
            mt_writer.close()
            writer.close()

    return handle


@pytest_asyncio.fixture
async def endpoint(start_engine) -> AsyncIterator[tuple[str, int]]:
    """detour's MTProto endpoint, reaching "DC 2" (the mock) directly."""
    origin = await start_integrity()
    async with serving(dc_mock(origin.address)) as dc:
        secrets = ", ".join(f'{name} = "{secret}"' for name, secret in SECRETS.items())
        text = config_text(
            extra=f"""
            [[service]]
            name = "telegram"
            cidrs = ["127.0.0.0/8"]

            [mtproto_proxy]
            listen = "127.0.0.1:0"
            secrets = {{ {secrets} }}
            mask = "127.0.0.1:9"
            dcs = {{ 2 = "{dc[0]}:{dc[1]}" }}
            max_per_client = 0
            """
        )
        engine = await start_engine(text, probe_on_start=False)
        assert engine.mtproto is not None
        yield engine.mtproto.address_bound
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
    async with serving(client_wrapper(user.mixed_address, tag)) as wrapper:
        reader, writer = await asyncio.open_connection(*wrapper, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, SIZE, SIZE), 600)
    assert result.ok, result
    assert result.sent == result.received == SIZE
