"""The MTProto proxy endpoint end to end on loopback: detour in-process with a `direct` route,
a client (tests/support/mtproxy_client.py, written apart from detour's code) with a plain,
`dd` or `ee` (fake-TLS) secret, and behind detour a "DC" -- an adapter that takes detour's
own obfuscated2 stream and unwraps its packets for the integrity origin. What arrives must be
what was sent, both ways, with the client's half-close carried through; 200 connections at
once stay intact; bad input gets the documented behaviour through real sockets: passed byte
for byte to the imitated site with an `ee` secret, held without an answer without one, and
a clean close once a real client's init has been read."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from helper.engine import Engine
from tests.conftest import config_text
from tests.support.integrity import IntegrityResult, run_integrity
from tests.support.mtproto import endpoint_section, start_unwrapper
from tests.support.mtproxy_client import client_hello, open_proxy, start_proxy_wrapper
from tests.support.origins import start_integrity
from tests.support.sizes import transfer_size
from transports.mtproto import Tag, initiate

SIZE = transfer_size(16 << 20)  # 4 MiB in make test, 64 with DETOUR_FULL_LOAD=1
KEY = os.urandom(16)
PLAIN = KEY.hex()
DD = "dd" + os.urandom(16).hex()
DOMAIN = "mask.test"
EE_KEY = os.urandom(16)
EE = "ee" + EE_KEY.hex() + DOMAIN.encode().hex()


@dataclass
class Setup:
    engine: Engine
    mask: MaskSite
    uploads: dict[int, int]  # what the origin received from each client, by its seed + 1

    @property
    def proxy(self) -> tuple[str, int]:
        assert self.engine.mtproto is not None
        return self.engine.mtproto.address_bound


class MaskSite:
    """Stands for the site an ee secret imitates: records what each connection sent and
    answers "site:" followed by it, once the client has ended."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        self.received.append(data)
        writer.write(b"site:" + data)
        await writer.drain()
        writer.close()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]


StartProxy = Callable[..., Awaitable[Setup]]


@pytest_asyncio.fixture
async def start_proxy(start_engine) -> AsyncIterator[StartProxy]:
    origin = await start_integrity()
    unwrapper = await start_unwrapper(origin.address)
    masks: list[MaskSite] = []

    async def start(
        secrets: str = f'al = "{PLAIN}", bob = "{DD}", carol = "{EE}"',
        routes: dict[str, str] | None = None,
        handshake_timeout: str = "2s",
        **extra,
    ) -> Setup:
        mask = MaskSite()
        mask_address = await mask.start()
        masks.append(mask)
        section = endpoint_section(
            secrets,
            unwrapper.address,
            mask_address,
            handshake_timeout=f'"{handshake_timeout}"',
            **extra,
        )
        text = config_text(routes=routes, extra=section)
        engine = await start_engine(text, probe_on_start=False)
        return Setup(engine, mask, origin.server.received)

    try:
        yield start
    finally:
        for mask in masks:
            if mask.server is not None:
                mask.server.close()
        await unwrapper.stop()
        origin.server.close()


@pytest.mark.slow
@pytest.mark.parametrize("secret", ["plain", "ee"])
async def test_each_way_sha256_with_half_close(start_proxy: StartProxy, secret: str) -> None:
    setup = await start_proxy()
    wrapper = await start_proxy_wrapper(setup.proxy, PLAIN if secret == "plain" else EE)
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, SIZE, SIZE), 300)
    finally:
        await wrapper.stop()
    assert result.ok, result
    assert result.sent == result.received == SIZE


async def test_a_small_reply_after_the_clients_half_close(start_proxy: StartProxy) -> None:
    setup = await start_proxy()
    wrapper = await start_proxy_wrapper(setup.proxy, EE)
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, 10, 1000), 20)
    finally:
        await wrapper.stop()
    assert result.ok, result


@pytest.mark.slow
async def test_200_connections_at_once_intact(start_proxy: StartProxy) -> None:
    # The 200 handshakes queue behind each other and behind the relaying in this one event
    # loop: on a loaded machine every fake-TLS (ee) handshake, which takes a round trip more,
    # ran past a 2 s handshake_timeout, and such a client is passed to the mask site (100 of
    # 200 failed, none of their bytes reaching the DC). The timeout is not what is tested here.
    setup = await start_proxy(handshake_timeout="120s")
    wrappers = [
        await start_proxy_wrapper(setup.proxy, secret, chunk=16 << 10) for secret in (PLAIN, EE)
    ]

    async def one(i: int) -> IntegrityResult:
        wrapper = wrappers[i % 2]
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        try:
            return await run_integrity(reader, writer, 64 << 10, 64 << 10, seed=i)
        finally:
            writer.close()

    try:
        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 240)
    finally:
        for wrapper in wrappers:
            await wrapper.stop()
    failed = {
        f"{i} ({'plain' if i % 2 == 0 else 'ee'})": (result, setup.uploads.get(i + 1))
        for i, result in enumerate(results)
        if not result.ok
    }
    assert not failed, f"(result, payload bytes the origin received) by connection: {failed}"


# --- bad input --------------------------------------------------------------------------------


async def read_all(reader: asyncio.StreamReader, within: float = 5.0) -> bytes | None:
    """What arrives until the connection ends; None if it is still open after `within`."""
    data = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionError:
        return data
    except TimeoutError:
        return None
    return data


def wrong_secret() -> bytes:
    return initiate(Tag.PADDED, 2, secret=os.urandom(16))[0] + bytes(100)


def replayed_hello() -> bytes:
    return client_hello(EE_KEY, DOMAIN)


MASKED = {
    "junk": bytes(range(1, 200)),
    "http": b"GET / HTTP/1.1\r\nHost: mask.test\r\n\r\n",
    "wrong secret": wrong_secret(),
    "a browser's hello": client_hello(os.urandom(16), DOMAIN),
    "a stale hello": client_hello(EE_KEY, DOMAIN, timestamp=1_000_000_000),
}


@pytest.mark.parametrize("name", list(MASKED))
async def test_with_an_ee_secret_others_get_the_site(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.INFO)
    setup = await start_proxy()
    data = MASKED[name]
    reader, writer = await asyncio.open_connection(*setup.proxy)
    writer.write(data)
    writer.write_eof()
    answer = await read_all(reader)
    writer.close()
    assert answer == b"site:" + data  # the site got every byte as sent, and answered
    assert setup.mask.received == [data]
    assert "passed to" in caplog.text and "Traceback" not in caplog.text


async def test_a_replayed_hello_gets_the_site(start_proxy: StartProxy) -> None:
    setup = await start_proxy()
    hello = replayed_hello()
    answers = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(*setup.proxy)
        writer.write(hello)
        writer.write_eof()
        answers.append(await read_all(reader))
        writer.close()
    assert answers[0] is not None and answers[0][:3] == b"\x16\x03\x03"  # detour's ServerHello
    assert answers[1] == b"site:" + hello
    assert setup.mask.received == [hello]


@pytest.mark.parametrize("name", ["junk", "wrong secret", "truncated init"])
async def test_without_an_ee_secret_others_get_silence(start_proxy: StartProxy, name: str) -> None:
    setup = await start_proxy(secrets=f'bob = "{DD}"')
    data = {
        "junk": bytes(range(1, 200)),
        "wrong secret": wrong_secret(),
        "truncated init": initiate(Tag.PADDED, 2, secret=bytes.fromhex(DD[2:]))[0][:40],
    }[name]
    reader, writer = await asyncio.open_connection(*setup.proxy)
    writer.write(data)
    # Nothing comes back and the connection stays open while the client keeps it open...
    assert await read_all(reader, within=1.0) is None
    # ... and ends when the client ends.
    writer.write_eof()
    assert await read_all(reader) == b""
    writer.close()
    assert setup.mask.received == []


async def test_an_unknown_dc_is_closed(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setup = await start_proxy()
    connection = await open_proxy(setup.proxy, DD, dc=77)
    connection.send(bytes(32))
    assert await read_all(connection.reader) == b""
    connection.close()
    assert "asked for DC 77" in caplog.text and "Traceback" not in caplog.text


async def test_an_oversized_frame_is_closed(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setup = await start_proxy()
    connection = await open_proxy(setup.proxy, PLAIN, dc=2, tag=Tag.INTERMEDIATE)
    connection._out(connection.ob.encrypt(struct.pack("<I", 256 << 20) + bytes(1000)))
    assert await read_all(connection.reader) is not None  # closed (a reset or an end)
    connection.close()
    assert "Traceback" not in caplog.text


async def test_one_users_connections_are_limited(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setup = await start_proxy(max_per_user="1")
    first = await open_proxy(setup.proxy, PLAIN, dc=2, tag=Tag.INTERMEDIATE)
    first.send(b"x" * 16)
    await first.drain()
    second = await open_proxy(setup.proxy, PLAIN, dc=2, tag=Tag.INTERMEDIATE)
    assert await read_all(second.reader) == b""  # closed at once
    second.close()
    assert "mtproto_proxy.max_per_user" in caplog.text
    first.close()
    # Once the first has ended, the user may connect again.
    await first.writer.wait_closed()

    async def admitted() -> bool:
        third = await open_proxy(setup.proxy, PLAIN, dc=2, tag=Tag.INTERMEDIATE)
        try:
            return await read_all(third.reader, within=0.5) is None  # held open: relaying
        finally:
            third.close()

    for _ in range(50):
        if await admitted():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the user's connection was never admitted again")


# --- a route that fails after connecting ------------------------------------------------------


class BreakingProxy:
    """A SOCKS5 proxy that connects to nothing: it says yes to any CONNECT, reads the first
    bytes the client sends, then breaks the connection (a reset or a close): a route that
    dials fine and fails at the first exchange, as a blocked path does."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(3)  # 05 01 00: no authentication
            writer.write(b"\x05\x00")
            head = await reader.readexactly(4)
            size = {1: 4, 4: 16}.get(head[3]) or (await reader.readexactly(1))[0]
            await reader.readexactly(size + 2)
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            self.received.append(await reader.read(65536))
        except (OSError, asyncio.IncompleteReadError):
            pass
        if self.how == "reset":
            writer.transport.abort()
        else:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_route_failing_the_first_packet_is_replaced_by_the_next(
    start_proxy: StartProxy, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.INFO)
    breaking = BreakingProxy(how)
    port = await breaking.start()
    setup = await start_proxy(routes={"broken": f"socks5://127.0.0.1:{port}", "direct": "direct"})
    wrapper = await start_proxy_wrapper(setup.proxy, PLAIN)
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, 1000, 1000), 20)
    finally:
        await wrapper.stop()
        assert breaking.server is not None
        breaking.server.close()
    # The first route got the client's first packet (with detour's init), then failed; the
    # next one carried the same bytes to the DC, and the client never knew.
    assert result.ok, result
    assert len(breaking.received) == 1 and len(breaking.received[0]) > 64
    assert "via broken" in caplog.text and "trying direct" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_retry_resends_the_same_bytes(start_proxy: StartProxy) -> None:
    """What docs/telegram.md's reasoning for the retry rests on: every route gets the same
    bytes (the same init, so the same keys, and the same first packet), so a DC that got the
    first copy sees the second as a resend of it, never as other bytes under the same
    keystream."""
    first, second = BreakingProxy("reset"), BreakingProxy("close")
    ports = [await first.start(), await second.start()]
    setup = await start_proxy(
        routes={
            "broken": f"socks5://127.0.0.1:{ports[0]}",
            "broken-too": f"socks5://127.0.0.1:{ports[1]}",
            "direct": "direct",
        }
    )
    wrapper = await start_proxy_wrapper(setup.proxy, PLAIN)
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, 1000, 1000), 20)
    finally:
        await wrapper.stop()
        for proxy in (first, second):
            assert proxy.server is not None
            proxy.server.close()
    assert result.ok, result
    assert len(first.received) == len(second.received) == 1
    assert len(first.received[0]) > 64
    assert first.received[0] == second.received[0]
