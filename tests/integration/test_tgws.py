"""tgws end to end on loopback: detour in-process with one `tgws` route, a client through its
SOCKS5 port, TLS and a WebSocket to the lab's mock web endpoint (TLS with a throw-away CA),
and behind it a "DC" -- here an adapter that unwraps the MTProto stream for the integrity
origin. What arrives must be what was sent, both ways, with the client's half-close carried
through; bad input gets its connection closed and nothing else."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web

from helper.engine import Engine
from helper.lab.telegram import web_endpoint_app
from tests.conftest import config_text
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.mtproto import start_unwrapper, start_wrapper
from tests.support.origins import TestCA, start_integrity
from tests.support.sizes import transfer_size
from transports import Endpoint
from transports.mtproto import Tag, encode_packet, initiate

DC2 = "127.0.0.2"  # stands for DC 2's address (a route option says so)
DC3 = "127.0.0.3"  # DC 3: the endpoint has nothing behind it and answers 302
SIZE = transfer_size(64 << 20)  # 16 MiB in make test: tests/support/sizes.py


@dataclass
class Setup:
    engine: Engine
    endpoint_port: int

    @property
    def socks(self) -> tuple[str, int]:
        return self.engine.mixed_address


async def serve_endpoint(app: web.Application, ca: TestCA) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ca.server_context("kws2.web.telegram.org", "kws3.web.telegram.org")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1]


def tgws_config(ca: TestCA, port: int) -> str:
    chain = f"tgws:dc2={DC2};dc3={DC3};addr=127.0.0.1:{port}"
    return config_text(
        routes={"tgws": chain},
        default="tgws",
        extra=f"""
        [tls]
        extra_ca = ["{ca.ca_path}"]
        [[service]]
        name = "telegram"
        cidrs = ["127.0.0.0/24"]
        """,
    )


@pytest_asyncio.fixture
async def setup(tmp_path, start_engine) -> AsyncIterator[Setup]:
    ca = TestCA(tmp_path / "ca")
    origin = await start_integrity()
    unwrapper = await start_unwrapper(origin.address)
    runner, port = await serve_endpoint(web_endpoint_app({2: unwrapper.address}), ca)
    engine = await start_engine(tgws_config(ca, port), probe_on_start=False)
    try:
        yield Setup(engine, port)
    finally:
        await runner.cleanup()
        await unwrapper.stop()
        origin.server.close()


@pytest.mark.slow
async def test_64mib_each_way_sha256_with_half_close(setup: Setup) -> None:
    wrapper = await start_wrapper(setup.socks, (DC2, 443))
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, SIZE, SIZE), 120)
    finally:
        await wrapper.stop()
    assert result.ok, result
    assert result.sent == result.received == SIZE


async def test_a_small_reply_after_the_clients_half_close(setup: Setup) -> None:
    wrapper = await start_wrapper(setup.socks, (DC2, 443))
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, 10, 1000), 20)
    finally:
        await wrapper.stop()
    assert result.ok, result


async def closed_quickly(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True when the connection ends (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


def full_transport() -> bytes:
    body = bytes(40)
    return struct.pack("<II", len(body) + 12, 0) + body + bytes(4)


def oversized() -> bytes:
    init, client = initiate(Tag.INTERMEDIATE, 2)
    return init + client.encrypt(struct.pack("<I", 256 << 20) + bytes(1000))


@pytest.mark.parametrize(
    ("name", "data", "then_eof"),
    [
        # Named by hand: the random bytes would make the test ids differ from run to run
        # (and between the workers of one run).
        pytest.param(*case, id=case[0])
        for case in [
            ("junk", bytes(range(1, 200)), False),
            ("truncated init", initiate(Tag.ABRIDGED)[0][:40], True),
            ("full transport", full_transport(), False),
            ("http", b"POST /api HTTP/1.1\r\nHost: x\r\n\r\n", False),
            ("oversized packet", oversized(), False),
        ]
    ],
)
async def test_bad_input_gets_a_clean_close(
    setup: Setup, caplog: pytest.LogCaptureFixture, name: str, data: bytes, then_eof: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await open_socks5(setup.socks, DC2, 443)
    writer.write(data)
    if then_eof:
        writer.write_eof()
    assert await closed_quickly(reader), name
    writer.close()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "tgws to kws2.web.telegram.org" in caplog.text


async def test_an_address_that_is_no_dc_is_refused_at_once(setup: Setup) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="SOCKS5 reply"):
        await open_socks5(setup.socks, "127.0.0.9", 443)
    assert time.monotonic() - started < 2.0


async def test_a_dc_the_endpoint_will_not_carry_is_not_applicable(setup: Setup) -> None:
    route = setup.engine.router.route("tgws")
    for _ in range(2):
        with pytest.raises(ConnectionError, match="SOCKS5 reply"):
            await open_socks5(setup.socks, DC3, 443)
    why = route.not_applicable(Endpoint(DC3, 443))
    assert why is not None and "HTTP 302" in why and "DC 3" in why
    health = setup.engine.router.health.get("telegram", "tgws")
    assert health.dial_failures == 0  # nothing held against the route


async def test_an_oversized_frame_from_the_endpoint_ends_the_connection(
    tmp_path, start_engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def flood(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=0)
        await ws.prepare(request)
        await ws.receive()
        await ws.send_bytes(bytes(8 << 20))  # far beyond one MTProto packet
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/apiws", flood)
    ca = TestCA(tmp_path / "ca")
    runner, port = await serve_endpoint(app, ca)
    try:
        engine = await start_engine(tgws_config(ca, port), probe_on_start=False)
        reader, writer = await open_socks5(engine.mixed_address, DC2, 443)
        init, client = initiate(Tag.INTERMEDIATE, 2)
        writer.write(init + client.encrypt(encode_packet(Tag.INTERMEDIATE, bytes(40))))
        assert await closed_quickly(reader)
        writer.close()
    finally:
        await runner.cleanup()
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    "layers", ["", "tlsfrag:sni | "], ids=["loop-tls", "python-tls-under-tlsfrag"]
)
async def test_both_tls_paths_carry_the_stream_intact(
    tmp_path, start_engine, monkeypatch, layers
) -> None:
    """A bare `tgws` runs its TLS on the loop's transport, and the relay then pipes it to
    the client on its fast path (transports/wsfast.py); under `tlsfrag` (which must
    rewrite the ClientHello) in Python, copied by the relay's tasks: both carry 1 MiB each
    way intact."""
    import transports.tls
    import transports.wsfast

    decided: list[bool] = []
    real = transports.tls.loop_tls_applies

    def spy(stream):
        decided.append(real(stream))
        return decided[-1]

    piped: list[object] = []
    real_detach = transports.wsfast.TgWsPipe.detach

    def detach_spy(self):
        piped.append(self)
        return real_detach(self)

    monkeypatch.setattr(transports.tls, "loop_tls_applies", spy)
    monkeypatch.setattr(transports.wsfast.TgWsPipe, "detach", detach_spy)
    ca = TestCA(tmp_path / "ca")
    origin = await start_integrity()
    unwrapper = await start_unwrapper(origin.address)
    runner, port = await serve_endpoint(web_endpoint_app({2: unwrapper.address}), ca)
    config = tgws_config(ca, port).replace('"tgws:', f'"{layers}tgws:')
    assert layers in config
    engine = await start_engine(config, probe_on_start=False)
    wrapper = await start_wrapper(engine.mixed_address, (DC2, 443))
    try:
        reader, writer = await asyncio.open_connection(*wrapper.address, limit=1 << 20)
        result = await asyncio.wait_for(run_integrity(reader, writer, 1 << 20, 1 << 20), 60)
    finally:
        await wrapper.stop()
        await runner.cleanup()
        await unwrapper.stop()
        origin.server.close()
    assert result.ok, result
    assert decided and all(decided) is (not layers)  # the loop's TLS only over a bare socket
    assert bool(piped) is (not layers)  # and the relay's fast path only on it
