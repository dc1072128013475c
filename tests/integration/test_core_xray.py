"""Xray as detour's managed core, against Xray servers, both from PyPI's xray-core (the
extension module, run by transports/core/xray_module.py): VLESS + REALITY with the
xtls-rprx-vision flow (and what a prober without the key sees: the dest site), VLESS over
XHTTP, a uTLS `fp=chrome` ClientHello, 64 MiB each way, half-close. A restart after the core
dies and a server that is down: test_cores.py, with xray among its cores."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from helper.config import parse_config
from helper.engine import Engine
from tests.conftest import config_text
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.sizes import transfer_size
from tests.support.xray import reality_keys, xray_program, xray_server
from transports import DialError, DialOptions, Endpoint, parse_chain
from transports.core.check import check_link
from transports.core.programs import MODULE_PROGRAM, find_core
from transports.links import parse_link
from transports.pt import PtManager

pytestmark = pytest.mark.peer

SIZE = transfer_size(64 << 20)  # 16 MiB in make test: tests/support/sizes.py
USER = str(uuid.UUID(int=0x6A2F_0C51_9E2B_4D7A_8F10_3B5C_2E71_9D44))
SHORT_ID = "6ba85179e30d4fc2"
DEST_PAGE = b"the dest site\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> str:
    """The `xray` program detour runs as the core (the launcher with this Python)."""
    return xray_program(tmp_path_factory.mktemp("xray-bin"))


def engine_config(link: str, test_ca, core: str) -> str:
    extra = f'[tls]\nextra_ca = ["{test_ca.ca_path}"]\n[core]\nprogram = "{core}"\n'
    return config_text(routes={"own": link}, default="own", extra=extra)


# --- a local TLS site: REALITY's dest, and where ClientHellos are looked at -----------------


async def _serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(DEST_PAGE)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + DEST_PAGE)
        await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def dest_site(background, test_ca) -> Iterator[int]:
    """A TLS 1.3 site on loopback for reality.test (REALITY's `target`); yields its port."""
    cert, key = test_ca.issue("reality.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    server = background.run(asyncio.start_server(_serve_page, "127.0.0.1", 0, ssl=context))
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture(scope="module")
def reality(dest_site) -> Iterator[str]:
    """An Xray VLESS + REALITY server (xtls-rprx-vision) in front of the dest site; yields
    the link to it."""
    private, public = reality_keys()
    inbound = {
        "protocol": "vless",
        "settings": {"clients": [{"id": USER, "flow": "xtls-rprx-vision"}], "decryption": "none"},
        "streamSettings": {
            "network": "tcp",
            "security": "reality",
            "realitySettings": {
                "target": f"127.0.0.1:{dest_site}",
                "serverNames": ["reality.test"],
                "privateKey": private,
                "shortIds": [SHORT_ID],
            },
        },
    }
    with xray_server(inbound) as server:
        yield (
            f"vless://{USER}@127.0.0.1:{server.port}?security=reality&pbk={public}"
            f"&sid={SHORT_ID}&sni=reality.test&fp=chrome&type=tcp&flow=xtls-rprx-vision#reality"
        )


@pytest.fixture(scope="module")
def xhttp(test_ca) -> Iterator[str]:
    """An Xray VLESS server over XHTTP with TLS (the test CA's certificate)."""
    cert, key = test_ca.issue("vpn.test")
    inbound = {
        "protocol": "vless",
        "settings": {"clients": [{"id": USER}], "decryption": "none"},
        "streamSettings": {
            "network": "xhttp",
            "security": "tls",
            "xhttpSettings": {"path": "/up"},
            "tlsSettings": {
                "alpn": ["h2", "http/1.1"],
                "certificates": [{"certificateFile": str(cert), "keyFile": str(key)}],
            },
        },
    }
    with xray_server(inbound) as server:
        yield (
            f"vless://{USER}@127.0.0.1:{server.port}?type=xhttp&path=%2Fup&security=tls"
            "&sni=vpn.test#xhttp"
        )


async def echo_through(engine: Engine, echo_origin, payload: bytes) -> bytes:
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(payload)
    async with asyncio.timeout(20):
        got = await reader.readexactly(len(payload))
    writer.close()
    return got


# --- the launcher ---------------------------------------------------------------------------


def test_the_module_is_found_as_an_xray_core_that_tests_configs(xray, tmp_path: Path) -> None:
    core = find_core(xray)
    assert core.kind == "xray" and core.version >= (25,), core
    good = tmp_path / "good.json"
    good.write_text(
        '{"inbounds": [{"port": 1080, "listen": "127.0.0.1", "protocol": "socks"}],'
        ' "outbounds": [{"protocol": "freedom"}]}'
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"inbounds": [{"port": 1080, "protocol": "no-such-protocol"}]}')
    done = subprocess.run(
        [xray, "run", "-test", "-c", str(good)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Configuration OK." in done.stdout, done
    done = subprocess.run(
        [xray, "run", "-test", "-c", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 23, done  # the module gives no reason
    bad.write_text("{not json")
    done = subprocess.run([xray, "run", "-c", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 23 and "is not JSON" in done.stderr, done


def test_the_module_is_found_after_path_and_by_name(xray, tmp_path: Path) -> None:
    """With no core on PATH, detour runs Xray from the module; `python:xray` names it."""
    named = find_core(MODULE_PROGRAM)
    assert named.kind == "xray" and named.command and named.command[0] == sys.executable
    assert named.path.endswith("xray") and "from the Python module" in named.origin
    assert find_core(None, path="/nonexistent") == named
    # A core on PATH comes first.
    fake = tmp_path / "v2ray"
    fake.write_text(f"#!{sys.executable}\nprint('V2Ray 4.34.0 (user)')\n")
    fake.chmod(0o755)
    assert find_core(None, path=str(tmp_path)).path == str(fake)


def test_config_check_says_which_core_runs_and_runs_its_test(reality, tmp_path: Path) -> None:
    assert check_link(parse_link(reality).params["link"], MODULE_PROGRAM) is None
    path = tmp_path / "links.toml"
    path.write_text(
        f'[base]\nconfig = "none"\n[core]\nprogram = "{MODULE_PROGRAM}"\n'
        f'[[route]]\nname = "reality"\nchain = "{reality}"\n'
    )
    path.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "helper", "config", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  core:     xray " in done.stdout
    assert "from the Python module" in done.stdout and "(python:xray)" in done.stdout


# --- REALITY --------------------------------------------------------------------------------


async def test_vless_reality_vision_through_the_managed_xray(
    reality, xray, test_ca, echo_origin
) -> None:
    async with Engine(parse_config(engine_config(reality, test_ca, xray))) as engine:
        payload = bytes(range(256)) * 256
        assert await echo_through(engine, echo_origin, payload) == payload
        [child] = engine.pluggable.children
        assert child.starts == 1 and "xray" in child.name


async def test_a_prober_without_the_key_gets_the_dest_site(reality, test_ca) -> None:
    """A client that speaks plain TLS to the REALITY port (no key, no short id) is passed
    through to the dest site: its certificate, its page."""
    port = int(reality.split("@127.0.0.1:")[1].split("?")[0])
    context = ssl.create_default_context(cafile=str(test_ca.ca_path))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="reality.test"
    )
    try:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        assert subject["commonName"] == "reality.test"  # the dest site's, from the test CA
        writer.write(b"GET / HTTP/1.1\r\nHost: reality.test\r\n\r\n")
        async with asyncio.timeout(20):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(DEST_PAGE)
    finally:
        writer.close()


@pytest.mark.slow
async def test_64mib_each_way_through_reality_vision(
    reality, xray, test_ca, integrity_origin
) -> None:
    async with Engine(parse_config(engine_config(reality, test_ca, xray))) as engine:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
        result = await run_integrity(reader, writer, up=SIZE, down=SIZE, half_close=False)
        assert result.received == SIZE
        assert result.ok_down and result.ok_up


# --- XHTTP ----------------------------------------------------------------------------------


async def test_vless_over_xhttp_through_xray_named_as_the_python_module(
    xhttp, xray, test_ca, integrity_origin
) -> None:
    """`[core] program = "python:xray"`: detour runs the module with its own Python."""
    async with Engine(parse_config(engine_config(xhttp, test_ca, MODULE_PROGRAM))) as engine:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
        result = await run_integrity(reader, writer, up=4 << 20, down=4 << 20, half_close=False)
        assert result.ok
        [child] = engine.pluggable.children
        assert child.name == "vless core (xray from the Python module)"


# --- half-close -----------------------------------------------------------------------------


async def test_half_close_through_reality_vision(
    reality, xray, test_ca, integrity_origin, echo_origin
) -> None:
    """Xray, like v2ray, does not pass the client's end of stream on to the destination: an
    answer still flowing after the client's end arrives whole, but a server that waits for
    the end before it answers never gets it, and xray closes the connection once nothing
    has moved for a moment (its uplinkOnly policy) -- it does not hang."""
    async with Engine(parse_config(engine_config(reality, test_ca, xray))) as engine:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
        data = bytes(range(256)) * (16 << 12)  # 4 MiB
        writer.write(data)
        writer.write_eof()
        got = bytearray()
        async with asyncio.timeout(60):
            while len(got) < len(data) and (chunk := await reader.read(1 << 20)):
                got += chunk
        assert got == data

        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
        async with asyncio.timeout(60):
            result = await run_integrity(reader, writer, up=1 << 20, down=1 << 20, half_close=True)
        assert result.ok_down  # sent while the payload arrived
        assert not result.ok_up  # the digest comes only after an end that never arrives


# --- uTLS: the ClientHello of fp=chrome ------------------------------------------------------


def _hello_fields(record: bytes) -> tuple[list[int], list[int]]:
    """The cipher suites and extension types of a ClientHello record, in order."""
    body = record[5 + 4 :]  # record header, handshake header
    at = 2 + 32  # version, random
    at += 1 + body[at]  # session id
    (length,) = struct.unpack_from("!H", body, at)
    suites = list(struct.unpack_from(f"!{length // 2}H", body, at + 2))
    at += 2 + length
    at += 1 + body[at]  # compression methods
    (end,) = struct.unpack_from("!H", body, at)
    at += 2
    end += at
    types = []
    while at + 4 <= end:
        kind, size = struct.unpack_from("!HH", body, at)
        types.append(kind)
        at += 4 + size
    return suites, types


def _grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@contextlib.asynccontextmanager
async def hello_catcher() -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    """A TCP server that keeps the first TLS record each connection sends (a ClientHello)
    and closes."""
    hellos: asyncio.Queue[bytes] = asyncio.Queue()

    async def catch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readexactly(5)
            hellos.put_nowait(head + await reader.readexactly(int.from_bytes(head[3:], "big")))
        writer.close()

    server = await asyncio.start_server(catch, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], hellos
    finally:
        server.close()


async def test_fp_chrome_sends_a_chrome_client_hello_not_pythons(xray) -> None:
    """uTLS: the core's ClientHello with fp=chrome has Chrome's marks (GREASE values first
    among the cipher suites and extensions, certificate compression, ALPS), which Python's
    own TLS (OpenSSL) has none of."""
    async with hello_catcher() as (port, hellos):
        context = ssl.create_default_context()
        with contextlib.suppress(OSError, ssl.SSLError):
            await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="a.test")
        python_suites, python_types = _hello_fields(await hellos.get())

        link = f"vless://{USER}@127.0.0.1:{port}?type=tcp&security=tls&sni=a.test&fp=chrome"
        manager = PtManager()
        try:
            dialer = parse_chain(link).build(DialOptions(pluggable=manager, core_program=xray))
            stream = await dialer.dial(Endpoint("127.0.0.1", 9))
            stream.write(b"x")
            async with asyncio.timeout(20):
                chrome = await hellos.get()
            with contextlib.suppress(OSError, DialError):
                stream.abort()
        finally:
            await manager.aclose()
    suites, types = _hello_fields(chrome)
    assert _grease(suites[0]) and not any(map(_grease, python_suites))
    assert any(map(_grease, types)) and not any(map(_grease, python_types))
    assert 0x001B in types and 0x001B not in python_types  # compress_certificate
    assert {0x4469, 0x44CD} & set(types)  # application_settings (ALPS)
    assert [s for s in suites if not _grease(s)] != python_suites
