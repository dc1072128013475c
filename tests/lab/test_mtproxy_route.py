"""An MTProto proxy someone was handed, as a route (`mtproxy:`), through the lab with a real
client: Telethon -> detour's SOCKS5 port -> `mtproxy:` route -> an MTProto proxy -> the lab's
DC 2 (black-holed: the proxy reaches it through its own tgws route). The proxy is detour's own
MTProto endpoint in a second engine (helper/proxy/mtproto.py: no independent MTProxy runs on
this Python), with a plain, a `dd` and an `ee` secret. The mock DC sees a valid req_pq_multi
and Telethon accepts the resPQ (it goes on to req_DH_params with the nonces and the factored
pq). A wrong secret is reported naming the proxy; nothing reaches the DC."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from helper.engine import Engine
from helper.lab.lab import Lab
from tests.lab.conftest import free_network
from tests.lab.test_mtproto_proxy import req_pq
from tests.support.mtproxy_client import open_proxy
from transports.mtproto import Tag

telethon = pytest.importorskip("telethon")
pytest.importorskip("python_socks")
from tests.support.telegram_client import (  # noqa: E402
    CONNECTIONS,  # abridged is re-framed for dd and ee
    assert_res_pq_accepted,
    running_engine,
    through_socks,
)
from tests.support.telegram_client import telethon_connects as _connects  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

MASK_NAME = "control.lab.test"
SECRETS = {
    "plain": os.urandom(16).hex(),
    "dd": "dd" + os.urandom(16).hex(),
    "ee": "ee" + os.urandom(16).hex() + MASK_NAME.encode().hex(),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab() -> AsyncIterator[Lab]:
    async with Lab("telegram-dc-blackhole", network=free_network(kernel=False)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(lab: Lab) -> AsyncIterator[tuple[str, int]]:
    """detour's MTProto endpoint: the "MTProto proxy" the user was handed."""
    dcs = ", ".join(f'{n} = "{lab.table.address(f"telegram-dc{n}")}"' for n in range(1, 6))
    secrets = ", ".join(f'{name} = "{secret}"' for name, secret in SECRETS.items())
    text = lab.helper_config(listen="127.0.0.1:0") + (
        "\n[mtproto_proxy]\n"
        'listen = "127.0.0.1:0"\n'
        f"secrets = {{ {secrets} }}\n"
        f'mask = "{lab.table.address("control")}:443"\n'
        f"dcs = {{ {dcs} }}\n"
    )
    async with running_engine(text, pin="tgws") as engine:
        assert engine.mtproto is not None
        yield engine.mtproto.address_bound


@contextlib.asynccontextmanager
async def detour(
    lab: Lab, proxy: tuple[str, int], secret: str, extra: str = ""
) -> AsyncIterator[Engine]:
    """The user's detour, with the proxy's link as its Telegram route."""
    host, port = proxy
    dcs = ", ".join(f'"{lab.table.address(f"telegram-dc{n}")}" = "{n}"' for n in range(1, 6))
    text = lab.helper_config(listen="127.0.0.1:0") + (
        f'\n[[route]]\nname = "handed"\nchain = "mtproxy:{host}:{port};secret={secret}"\n'
        f"\n[telegram]\ndcs = {{ {dcs} }}\n" + extra
    )
    async with running_engine(text, pin="handed") as engine:
        yield engine


async def telethon_connects(lab: Lab, engine: Engine, connection: type) -> None:
    """Telethon through detour's SOCKS5 port to the lab's DC 2."""
    await _connects(lab, connection, through_socks(engine))


@pytest.mark.parametrize("kind", list(SECRETS))
@pytest.mark.parametrize("connection", list(CONNECTIONS))
async def test_telethon_through_a_handed_proxy(
    lab: Lab, proxy: tuple[str, int], kind: str, connection: str, caplog
) -> None:
    caplog.set_level(logging.INFO)
    start = len(lab.dc_events.events)
    async with detour(lab, proxy, SECRETS[kind]) as engine:
        await telethon_connects(lab, engine, CONNECTIONS[connection])
    assert_res_pq_accepted(lab.dc_events.events[start:])
    assert "via handed" in caplog.text
    assert "Traceback" not in caplog.text
    for secret in SECRETS.values():
        assert secret[2:34] not in caplog.text


async def test_a_wrong_ee_secret_is_reported_naming_the_proxy(
    lab: Lab, proxy: tuple[str, int], caplog
) -> None:
    caplog.set_level(logging.INFO)
    wrong = "ee" + os.urandom(16).hex() + MASK_NAME.encode().hex()
    start = len(lab.dc_events.events)
    async with detour(lab, proxy, wrong) as engine:
        await telethon_connects(lab, engine, CONNECTIONS["obfuscated"])
    assert lab.dc_events.events[start:] == []
    assert f"MTProto proxy {proxy[0]}:{proxy[1]} answered as a website" in caplog.text
    assert wrong[2:34] not in caplog.text and "Traceback" not in caplog.text


async def probe(engine: Engine):
    telegram = next(s for s in engine.router.services if s.name == "telegram")
    return await engine.prober.probe(telegram, engine.router.route("handed"))


async def test_the_probe_reaches_the_dc_through_the_proxy(lab: Lab, proxy) -> None:
    async with detour(lab, proxy, SECRETS["ee"]) as engine:
        result = await probe(engine)
    dc = next(t for t in result.targets if t.target.startswith("mtproto://"))
    assert dc.ok, dc.detail
    # The web targets are not Telegram DCs: not carried, and not counted against the route.
    assert all(t.skipped for t in result.targets if t is not dc)
    assert result.ok


@pytest.mark.parametrize("kind", ["dd", "ee"])
async def test_a_wrong_secret_fails_the_probe_naming_the_proxy(lab: Lab, proxy, kind) -> None:
    wrong = SECRETS[kind][:2] + os.urandom(16).hex() + SECRETS[kind][34:]
    async with detour(lab, proxy, wrong) as engine:
        result = await probe(engine)
    dc = next(t for t in result.targets if t.target.startswith("mtproto://"))
    assert not dc.ok
    said = {
        "dd": "closed the connection without answering: a wrong secret",
        "ee": "answered as a website",
    }[kind]
    assert result.diagnosis.startswith(f"MTProto proxy {proxy[0]}:{proxy[1]} {said}")
    assert wrong[2:34] not in dc.detail + result.diagnosis


async def test_detours_own_endpoint_reaches_telegram_through_the_handed_proxy(
    lab: Lab, proxy: tuple[str, int]
) -> None:
    """A phone -> the user's detour as its MTProto proxy -> the handed proxy -> DC 2."""
    phone = "dd" + os.urandom(16).hex()
    endpoint = f'\n[mtproto_proxy]\nlisten = "127.0.0.1:0"\nsecrets = {{ phone = "{phone}" }}\n'
    start = len(lab.dc_events.events)
    async with detour(lab, proxy, SECRETS["ee"], endpoint) as engine:
        assert engine.mtproto is not None
        connection = await open_proxy(engine.mtproto.address_bound, phone, dc=2, tag=Tag.PADDED)
        try:
            await req_pq(connection)
        finally:
            connection.close()
    assert [e.what for e in lab.dc_events.events[start:]][:1] == ["req_pq_multi"]
