"""The lab's servers as clients meet them: the CDN front routing by Host (HTTP and
WebSocket) to a hidden backend, Telegram's data centres answering plain HTTP on 80 and 443,
and detour flagging the lying resolver's private answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl

import aiohttp
import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab
from tests.support.clients import exchange

pytestmark = pytest.mark.asyncio(loop_scope="module")


def front_session(lab: Lab) -> aiohttp.ClientSession:
    """Connect to the front's address whatever the URL's host: TLS names the front."""
    context = ssl.create_default_context(cafile=str(lab.ca.ca_path))
    front = lab.table.address("cdn")

    class Resolver(aiohttp.abc.AbstractResolver):
        async def resolve(self, host, port=0, family=0):
            return [
                {"hostname": host, "host": front, "port": port, "family": 2, "proto": 0, "flags": 0}
            ]

        async def close(self) -> None:
            pass

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, resolver=Resolver()))


async def test_front_answers_for_itself_and_hides_its_backend(lab: Lab) -> None:
    if lab.scenario.name != "allow-list":
        await lab.set_scenario("allow-list")  # only the front passes the censor
    async with front_session(lab) as session:
        async with session.get("https://cdn.lab.test/") as response:
            assert (await response.text()).startswith("cdn edge cdn.lab.test")
        # Domain fronting: TLS (and the censor) see cdn.lab.test, the Host names the backend.
        async with session.get(
            "https://cdn.lab.test/anything", headers={"Host": "ws-echo.lab.test"}
        ) as response:
            assert await response.text() == "hidden backend ws-echo.lab.test\n"
        async with session.ws_connect(
            "https://cdn.lab.test/tunnel", headers={"Host": "ws-echo.lab.test"}
        ) as ws:
            await ws.send_bytes(b"\x00through the front\xff")
            assert (await ws.receive_bytes(timeout=5)) == b"\x00through the front\xff"
            await ws.send_str("text too")
            assert (await ws.receive_str(timeout=5)) == "text too"
    if not lab.netns:  # the censor saw only the front's name
        assert {e.seen.sni for e in lab.censor.events if e.address == lab.table.address("cdn")} <= {
            "cdn.lab.test",
            None,
        }


@pytest.mark.parametrize("port", [80, 443])
async def test_telegram_data_centres_answer_a_post_in_plain_http(lab: Lab, port: int) -> None:
    if lab.scenario.name != "baseline":
        await lab.set_scenario("baseline")
    reader, writer = await asyncio.open_connection(lab.table.address("telegram-dc2"), port)
    writer.write(b"POST / HTTP/1.1\r\nHost: 149.154.167.51\r\nContent-Length: 4\r\n\r\nabcd")
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.startswith(b"HTTP/1.1 404")


async def test_detour_flags_the_lying_resolvers_private_answer(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    if lab.scenario.name != "dns-poison":
        await lab.set_scenario("dns-poison")
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"))
    config = dataclasses.replace(
        config, routes=(config.route("direct"), config.route("doh")), services=()
    )
    async with Engine(config) as engine:
        # v5 no-auth | v5 CONNECT name "g.whatsapp.net" :5222
        request = b"\x05\x01\x00\x05\x01\x00\x03\x0eg.whatsapp.net\x14\x66"
        reply = await exchange(engine.mixed_address, request, timeout=5)
    assert reply[2:4] == b"\x05\x04"
    assert "dns_bogon_error during resolve" in caplog.text
    assert "10.10.34.34" in caplog.text
