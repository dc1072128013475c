"""Telegram's apps with detour as their MTProto proxy, through the lab, with real clients:
Telethon (its MTProxy connection, `dd` secret) and tests/support/mtproxy_client.py (fake TLS,
written apart from detour's code). The lab's DC addresses are black-holed; detour takes the
connection to the DC through the telegram service's tgws route. The mock DC sees a valid
req_pq_multi and answers resPQ; Telethon accepts it and goes on to req_DH_params.

What a prober sees: with an `ee` secret, a TLS client that is not a proxy client gets the site
the secret imitates (here the lab's control.lab.test), with its certificate and its pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.engine import Engine
from helper.lab.lab import Lab
from tests.lab.conftest import free_network
from tests.support.mtproxy_client import client_hello, open_proxy
from transports.mtproto import Tag
from transports.mtproto import messages as tl

telethon = pytest.importorskip("telethon")
from tests.support.telegram_client import (  # noqa: E402
    MTPROXY,
    assert_res_pq_accepted,
    running_engine,
    telethon_connects,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DD = "dd" + os.urandom(16).hex()
EE_KEY = os.urandom(16).hex()
MASK_NAME = "control.lab.test"
EE = "ee" + EE_KEY + MASK_NAME.encode().hex()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("telegram-dc-blackhole", network=free_network(kernel=False)) as running:
        yield running


def proxy_section(lab: Lab) -> str:
    dcs = ", ".join(f'{n} = "{lab.table.address(f"telegram-dc{n}")}"' for n in range(1, 6))
    return (
        "\n[mtproto_proxy]\n"
        'listen = "127.0.0.1:0"\n'
        f'secrets = {{ alice = "{DD}", carol = "{EE}" }}\n'
        f'mask = "{lab.table.address("control")}:443"\n'
        f"dcs = {{ {dcs} }}\n"
    )


@contextlib.asynccontextmanager
async def detour(lab: Lab, route: str | None = "tgws") -> AsyncIterator[Engine]:
    text = lab.helper_config(listen="127.0.0.1:0") + proxy_section(lab)
    async with running_engine(text, pin=route) as engine:
        yield engine


def events_since(lab: Lab, start: int) -> list:
    return lab.dc_events.events[start:]


async def test_telethon_through_the_proxy_with_a_dd_secret(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    start = len(lab.dc_events.events)
    async with detour(lab) as engine:
        assert engine.mtproto is not None
        host, port = engine.mtproto.address_bound
        await telethon_connects(lab, MTPROXY, (host, port, DD))
    assert_res_pq_accepted(events_since(lab, start))
    assert "mtproto (alice, DC 2)" in caplog.text and "via tgws" in caplog.text
    assert "Traceback" not in caplog.text


async def req_pq(connection) -> tl.ResPQ:
    nonce = os.urandom(16)
    connection.send(tl.unencrypted(tl.req_pq_multi(nonce), tl.message_id()))
    await connection.drain()
    payload = await asyncio.wait_for(connection.receive(), 15)
    assert payload is not None
    _, body = tl.parse_unencrypted(payload)
    answer = tl.parse_res_pq(body)
    assert answer.nonce == nonce
    return answer


@pytest.mark.parametrize("secret", ["dd", "ee"])
async def test_an_independent_client_gets_res_pq(lab: Lab, secret: str) -> None:
    start = len(lab.dc_events.events)
    async with detour(lab) as engine:
        assert engine.mtproto is not None
        connection = await open_proxy(
            engine.mtproto.address_bound, DD if secret == "dd" else EE, dc=2, tag=Tag.PADDED
        )
        try:
            await req_pq(connection)
        finally:
            connection.close()
    assert [e.what for e in events_since(lab, start)][:1] == ["req_pq_multi"]


async def test_a_prober_sees_the_imitated_site(lab: Lab) -> None:
    async with detour(lab) as engine:
        assert engine.mtproto is not None
        context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
        answers = []
        for address in (engine.mtproto.address_bound, (lab.table.address("control"), 443)):
            reader, writer = await asyncio.open_connection(
                *address, ssl=context, server_hostname=MASK_NAME
            )
            writer.write(
                f"GET / HTTP/1.1\r\nHost: {MASK_NAME}\r\nConnection: close\r\n\r\n".encode()
            )
            answers.append(await asyncio.wait_for(reader.read(), 15))
            cert = writer.get_extra_info("peercert")
            writer.close()
            assert any(MASK_NAME in str(v) for v in cert["subjectAltName"])
        # Through detour the prober gets what the site itself says (its status line).
        assert answers[0].split(b"\r\n")[0] == answers[1].split(b"\r\n")[0]
        assert answers[0].startswith(b"HTTP/1.1 ")


async def test_a_replayed_hello_goes_to_the_site(lab: Lab) -> None:
    async with detour(lab) as engine:
        assert engine.mtproto is not None
        hello = client_hello(bytes.fromhex(EE_KEY), MASK_NAME)
        flights = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*engine.mtproto.address_bound)
            writer.write(hello)
            flights.append(await asyncio.wait_for(reader.read(5), 15))
            writer.close()
        # The first is answered by detour (a ServerHello record); the replay by the site,
        # whose TLS stack answers a hello it cannot use with an alert or its own hello.
        assert flights[0][:3] == b"\x16\x03\x03"
        assert flights[1] != b"" and flights[1][0] in (0x15, 0x16)
