"""Pluggable transport routes with real obfs4proxy on both ends: detour manages the client
(PT 1.0 managed proxy), the test runs the server side as a bridge operator would (PT server
mode, TOR_PT_SERVER_* environment) in front of a SOCKS server, here detour's own mixed
listener with a `direct` route.

    client --SOCKS5--> detour [pt:obfs4 ... | socks5://S] --obfs4--> obfs4proxy server --> S

Failures use small scripts that speak the managed-proxy protocol badly on purpose: a
VERSION-ERROR, a CMETHOD-ERROR, silence, a crash, a child that ignores every request to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from helper.config import parse_config
from helper.engine import Engine
from helper.lab.lab import Lab, LabError
from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.networks import free_network
from tests.support.sizes import transfer_size
from transports import DialError, Endpoint, Failure, Op, parse_chain
from transports.chain import DialOptions
from transports.pt import PtManager
from transports.pt.process import _exiting

pytestmark = pytest.mark.peer

# sha256-checked each way through both obfs4proxy ends: 16 MiB, far past every buffer on the
# way (64 MiB with DETOUR_FULL_LOAD=1, 4 MiB in make test: tests/support/sizes.py).
SIZE = transfer_size(16 << 20)
CERT = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Engines keep PT state under the state directory: a private one per test."""
    monkeypatch.setenv("DETOUR_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
async def forward_target() -> AsyncIterator[Engine]:
    """What the bridge forwards to: a SOCKS server (detour's listener, direct route)."""
    async with Engine(parse_config(config_text()), probe_on_start=False) as engine:
        yield engine


@pytest.fixture
def bridge(forward_target: Engine) -> Iterator[peers.Peer]:
    with peers.obfs4_server(forward_target.mixed_address) as server:
        yield server


def pt_chain(bridge: peers.Peer, forward: Engine, extra: str = "") -> str:
    host, port = forward.mixed_address
    return f"pt:{bridge.bridge}{extra} | socks5://{host}:{port}"


async def start_client(chain: str, **routes: str) -> Engine:
    text = config_text(routes={"pt": chain, **routes}, default="pt")
    engine = Engine(parse_config(text), probe_on_start=False)
    await engine.start()
    return engine


@pytest.fixture
async def client_engine() -> AsyncIterator[Callable[..., asyncio.Future[Engine]]]:
    engines: list[Engine] = []

    async def start(chain: str, **routes: str) -> Engine:
        engines.append(await start_client(chain, **routes))
        return engines[-1]

    yield start  # type: ignore[misc]
    for engine in engines:
        await engine.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still has a pid; it is gone as far as this test is concerned.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return True


# --- data through obfs4 -------------------------------------------------------------------


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sha256_both_ways_through_obfs4(loop: str, integrity_origin) -> None:
    async def scenario() -> None:
        async with Engine(parse_config(config_text()), probe_on_start=False) as forward:
            with peers.obfs4_server(forward.mixed_address) as server:
                engine = await start_client(pt_chain(server, forward))
                try:
                    reader, writer = await open_socks5(
                        engine.mixed_address, "127.0.0.1", integrity_origin.port
                    )
                    # obfs4proxy closes both directions at the first end of stream (as
                    # microsocks does): the exchange announces its length instead.
                    result = await run_integrity(
                        reader, writer, up=SIZE, down=SIZE, half_close=False
                    )
                    assert result.received == SIZE
                    assert result.ok_down, "bytes from the server arrived altered"
                    assert result.ok_up, "the server's digest of what we sent differs"
                    [client] = engine.pluggable.clients
                    assert client.starts == 1
                    shown = str(engine.router.route("pt").chain)
                    assert shown.startswith("pt:obfs4 *** | socks5://")
                finally:
                    await engine.stop()

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(scenario())


async def test_routes_share_one_child_per_transport(
    bridge: peers.Peer, forward_target: Engine, client_engine, echo_origin
) -> None:
    chain = pt_chain(bridge, forward_target)
    engine = await client_engine(chain, other=f"{chain} | split:1")
    for route in ("pt", "other"):
        dialer = engine.router.route(route).dialer
        streams = await asyncio.gather(
            *(dialer.dial(Endpoint("127.0.0.1", echo_origin.port)) for _ in range(4))
        )
        for stream in streams:
            stream.write(b"ping")
            assert await stream.readexactly(4) == b"ping"
            stream.close()
    [client] = engine.pluggable.clients
    assert client.starts == 1


async def test_the_proxy_behind_the_bridge_with_a_login(client_engine, echo_origin) -> None:
    """The recipe in docs/transports.md: detour's listener behind the bridge, with a login
    that keeps out others who learn the bridge line."""
    text = (
        '[listen]\nmixed = "127.0.0.1:0"\nusers = [{ name = "bridge", password = "s3cret" }]\n'
        '[[route]]\nname = "direct"\nchain = "direct"\n'
    )
    async with Engine(parse_config(text), probe_on_start=False) as forward:
        with peers.obfs4_server(forward.mixed_address) as server:
            host, port = forward.mixed_address
            chain = f"pt:{server.bridge} | socks5://bridge:s3cret@{host}:{port}"
            engine = await client_engine(chain, wrong=chain.replace("s3cret", "guess"))
            reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
            writer.write(b"logged in")
            assert await reader.readexactly(9) == b"logged in"
            writer.close()
            with pytest.raises(DialError) as caught:
                await engine.router.route("wrong").dialer.dial(
                    Endpoint("127.0.0.1", echo_origin.port)
                )
            assert caught.value.failure is Failure.PROXY_AUTH_FAILED


async def test_wrong_cert_is_a_clear_timeout_not_a_hang(
    bridge: peers.Peer, forward_target: Engine
) -> None:
    """An obfs4 server that cannot read the client's handshake stays silent (that is its
    design: a prober learns nothing). detour gives up after the route's timeout."""
    assert bridge.bridge is not None
    wrong = bridge.bridge.split(" cert=")[0] + f" cert={CERT} iat-mode=0"
    host, port = forward_target.mixed_address
    manager = PtManager()
    try:
        dialer = parse_chain(f"pt:{wrong} | socks5://{host}:{port}").build(
            DialOptions(pluggable=manager, handshake_timeout=1.0)
        )
        with pytest.raises(DialError) as caught:
            await dialer.dial(Endpoint("127.0.0.1", 9))
    finally:
        await manager.aclose()
    error = caught.value
    assert (error.failure, error.op) == (Failure.TIMEOUT, Op.PROXY_HANDSHAKE)
    assert "no answer from the obfs4 bridge" in error.detail
    assert CERT not in str(error) and str(bridge.port) not in str(error)


async def test_bridge_down_is_reported(forward_target: Engine) -> None:
    dead = peers.free_port()
    host, port = forward_target.mixed_address
    chain = f"pt:obfs4 127.0.0.1:{dead} cert={CERT} iat-mode=0 | socks5://{host}:{port}"
    manager = PtManager()
    try:
        with pytest.raises(DialError) as caught:
            await (
                parse_chain(chain)
                .build(DialOptions(pluggable=manager))
                .dial(Endpoint("127.0.0.1", 9))
            )
    finally:
        await manager.aclose()
    # obfs4proxy answers "general failure" whatever went wrong with the bridge
    assert (caught.value.failure, caught.value.op) == (Failure.PROXY_REFUSED, Op.PROXY_HANDSHAKE)
    assert "the obfs4 client (obfs4proxy) could not connect to the obfs4 bridge" in (
        caught.value.detail
    )


# --- the lab through obfs4 ----------------------------------------------------------------


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    try:
        async with Lab("baseline", network=free_network()) as running:
            yield running
    except LabError as exc:
        peers.skip_or_fail(f"the lab cannot start here: {exc}")


async def test_lab_endpoints_through_obfs4(lab: Lab, client_engine) -> None:
    """The SOCKS server behind the bridge resolves with the lab's DNS; detour's route sends
    the names through the tunnel (remote DNS), so what answers is the lab's endpoints."""
    curl = peers.require_peer("curl", "curl")
    config = parse_config(lab.helper_config(listen="127.0.0.1:0"), "lab config")
    config = dataclasses.replace(
        config, routes=(config.route("direct"),), services=(), default_policy="direct"
    )
    async with Engine(config, probe_on_start=False) as behind_bridge:
        with peers.obfs4_server(behind_bridge.mixed_address) as server:
            engine = await client_engine(pt_chain(server, behind_bridge))
            host, port = engine.mixed_address
            for url in ("https://web.telegram.org/", "https://chat.signal.org/"):
                result = await asyncio.to_thread(
                    subprocess.run,
                    [
                        curl, "--silent", "--show-error", "--max-time", "10",
                        "--socks5-hostname", f"{host}:{port}",
                        "--cacert", str(lab.ca.ca_path), url,
                    ],
                    capture_output=True,
                    text=True,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith(f"hello from {url.split('/')[2]}")
            whatsapp = await open_socks5((host, port), "g.whatsapp.net", 5222)
            whatsapp[1].close()


# --- through an upstream proxy (TOR_PT_PROXY) ------------------------------------------------


async def test_pt_client_goes_through_the_upstream_proxy(
    bridge: peers.Peer, forward_target: Engine, client_engine, echo_origin
) -> None:
    """`socks5://PROXY | pt:... | socks5://...`: the PT client is given TOR_PT_PROXY. A wrong
    password there fails the route, which shows that the PT really uses the proxy."""
    with peers.microsocks("alice", "pw-right") as proxy:
        good = (
            f"socks5://alice:pw-right@127.0.0.1:{proxy.port} | {pt_chain(bridge, forward_target)}"
        )
        engine = await client_engine(good, bad=good.replace("pw-right", "pw-wrong"))
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
        writer.write(b"via the proxy")
        assert await reader.readexactly(13) == b"via the proxy"
        writer.close()
        with pytest.raises(DialError) as caught:
            await engine.router.route("bad").dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        assert "pw-wrong" not in str(caught.value)
        assert len(engine.pluggable.clients) == 2  # one child per upstream proxy


# --- a child that dies ----------------------------------------------------------------------


async def test_killed_pt_resets_its_connections_and_the_next_dial_restarts_it(
    bridge: peers.Peer, forward_target: Engine, client_engine, integrity_origin, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="detour.pt")
    engine = await client_engine(pt_chain(bridge, forward_target))
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
    [client] = engine.pluggable.clients
    pid = client.pid
    assert pid is not None
    # want 1 GiB from the server; kill the PT once some of it has arrived
    writer.write(struct.pack("!QQQ", 1 << 30, 1, 0))
    await reader.readexactly(1 << 20)
    os.kill(pid, signal.SIGKILL)
    # Its socket to detour closes like a normal end (FIN); detour makes that a reset, so
    # the client cannot take the cut transfer for a complete one.
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(10):
            while True:
                if not await reader.read(1 << 20):
                    raise asyncio.IncompleteReadError(b"", None)
    writer.close()
    # The next connection starts a new child and works.
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", integrity_origin.port)
    result = await run_integrity(reader, writer, up=1 << 20, down=1 << 20, half_close=False)
    assert result.ok
    assert "the obfs4 client (obfs4proxy) was killed by signal 9" in caplog.text
    assert client.starts == 2
    assert client.pid not in (None, pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_exiting_is_read_from_proc() -> None:
    assert _exiting(os.getpid()) is False
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert _exiting(child.pid) is True
    child.wait()
    assert _exiting(child.pid) is True  # gone


# --- stopping ---------------------------------------------------------------------------------


async def test_engine_stop_ends_the_pt_by_closing_its_stdin(
    bridge: peers.Peer, forward_target: Engine, echo_origin
) -> None:
    engine = await start_client(pt_chain(bridge, forward_target))
    try:
        stream = await engine.router.route("pt").dialer.dial(
            Endpoint("127.0.0.1", echo_origin.port)
        )
        stream.close()
        [client] = engine.pluggable.clients
        pid = client.pid
        assert pid is not None and alive(pid)
        child = client._child
        assert child is not None
    finally:
        await engine.stop()
    assert not alive(pid)
    assert child.process.returncode == 0  # it left on its own: stdin closed, no signal


# --- programs that misbehave ------------------------------------------------------------------


def fake_pt(tmp_path: Path, body: str) -> Path:
    """An executable script speaking (or not) the managed-proxy protocol."""
    path = tmp_path / "fake-pt"
    path.write_text(f"#!{sys.executable}\nimport os, signal, sys, time\n{textwrap.dedent(body)}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def dial_fake(program: Path | str, manager: PtManager, transport: str = "obfs4") -> DialError:
    args = f"cert={CERT} iat-mode=0" if transport == "obfs4" else "k=v"
    chain = f"pt:{transport} 127.0.0.1:9 {args} bin={program} | socks5://127.0.0.1:9"
    dialer = parse_chain(chain).build(DialOptions(pluggable=manager, handshake_timeout=2.0))
    with pytest.raises(DialError) as caught:
        async with asyncio.timeout(10):
            await dialer.dial(Endpoint("127.0.0.1", 9))
    return caught.value


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[PtManager]:
    pts = PtManager(tmp_path / "pt", start_timeout=1.0, stop_grace=0.3, backoff_first=30.0)
    yield pts
    await pts.aclose()


async def test_missing_program_names_the_package(
    manager: PtManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    error = await dial_fake(tmp_path / "no-such-program", manager)
    assert (error.failure, error.op) == (Failure.PT_NOT_INSTALLED, Op.CONNECT)
    assert "does not exist" in error.detail
    monkeypatch.setenv("PATH", str(tmp_path))
    chain = f"pt:obfs4 127.0.0.1:9 cert={CERT} iat-mode=0 | socks5://127.0.0.1:9"
    with pytest.raises(DialError) as caught:
        await parse_chain(chain).build(DialOptions(pluggable=manager)).dial(Endpoint("a", 1))
    assert caught.value.failure is Failure.PT_NOT_INSTALLED
    assert "install the Debian package obfs4proxy" in caught.value.detail
    assert not manager.clients


async def test_missing_program_through_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, echo_origin, caplog
) -> None:
    """What a user sees: a SOCKS error for the client, the diagnosis in the log."""
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = await start_client(
        f"pt:obfs4 192.0.2.3:443 cert={CERT} iat-mode=0 | socks5://127.0.0.1:1080"
    )
    try:
        with pytest.raises(ConnectionError, match="SOCKS5 reply 1"):
            await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    finally:
        await engine.stop()
    assert "pt_not_installed during connect" in caplog.text
    assert "Debian package obfs4proxy" in caplog.text
    assert CERT not in caplog.text and "192.0.2.3" not in caplog.text


async def test_version_error_then_restart_then_backoff(tmp_path: Path) -> None:
    program = fake_pt(tmp_path, 'print("VERSION-ERROR no-version", flush=True)\nsys.exit(1)\n')
    manager = PtManager(tmp_path / "pt", start_timeout=2.0, backoff_first=30.0)
    try:
        first = await dial_fake(program, manager)
        assert (first.failure, first.op) == (Failure.PT_FAILED, Op.CONNECT)
        assert first.detail == "the obfs4 client (fake-pt) answered VERSION-ERROR: no-version"
        [client] = manager.clients
        again = await dial_fake(program, manager)  # the next use starts it again
        assert again.detail == first.detail
        assert client.starts == 2
        waiting = await dial_fake(program, manager)  # twice in a row: now it waits
        assert waiting.failure is Failure.PT_FAILED
        assert waiting.detail.startswith(f"{first.detail}; it failed 2 times in a row, next ")
        assert client.starts == 2
    finally:
        await manager.aclose()


async def test_a_fixed_program_works_on_the_next_use(
    tmp_path: Path, bridge: peers.Peer, forward_target: Engine, echo_origin
) -> None:
    """The first start fails (VERSION-ERROR); the program is fixed; the next dial starts it."""
    program = fake_pt(tmp_path, 'print("VERSION-ERROR no-version", flush=True)\n')
    manager = PtManager(tmp_path / "pt")
    try:
        chain = pt_chain(bridge, forward_target, extra=f" bin={program}")
        dialer = parse_chain(chain).build(DialOptions(pluggable=manager))
        with pytest.raises(DialError, match="VERSION-ERROR"):
            await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        program.unlink()
        program.symlink_to(peers.require_peer("obfs4proxy", "obfs4proxy"))
        stream = await dialer.dial(Endpoint("127.0.0.1", echo_origin.port))
        stream.write(b"fixed")
        assert await stream.readexactly(5) == b"fixed"
        stream.close()
    finally:
        await manager.aclose()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(
            """
            print("VERSION 1")
            print("CMETHOD-ERROR obfs4 this build has no obfs4", flush=True)
            print("CMETHODS DONE", flush=True)
            sys.stdin.read()
            """,
            "answered CMETHOD-ERROR: this build has no obfs4",
            id="cmethod-error",
        ),
        pytest.param(
            'print("VERSION 1")\nprint("ENV-ERROR no TOR_PT_STATE_LOCATION", flush=True)\n',
            "answered ENV-ERROR: no TOR_PT_STATE_LOCATION",
            id="env-error",
        ),
        pytest.param(
            """
            print("VERSION 1")
            print("CMETHOD meek_lite socks5 127.0.0.1:1", flush=True)
            print("CMETHODS DONE", flush=True)
            sys.stdin.read()
            """,
            "does not offer the transport obfs4 (offered: meek_lite)",
            id="other-transport",
        ),
        pytest.param(
            'print("panic: runtime error: index out of range", file=sys.stderr)\nsys.exit(2)\n',
            "exited (status 2) before it was ready; it said: panic: runtime error: index out",
            id="crash-at-start",
        ),
        pytest.param(
            "sys.stdin.read()\n",
            "did not report its SOCKS port within 1 s",
            id="silent",
        ),
        pytest.param(
            'sys.stdout.write("\\x00" * 100000 + "\\n")\nsys.stdout.flush()\nsys.stdin.read()\n',
            "did not report its SOCKS port within 1 s",
            id="garbage",
        ),
    ],
)
async def test_launch_failures_are_diagnosed_and_the_child_is_gone(
    manager: PtManager, tmp_path: Path, body: str, detail: str
) -> None:
    program = fake_pt(tmp_path, body)
    error = await dial_fake(program, manager)
    assert (error.failure, error.op) == (Failure.PT_FAILED, Op.CONNECT)
    assert detail in error.detail
    [client] = manager.clients
    assert client.pid is None  # nothing left running


async def test_the_environment_the_pt_gets(manager: PtManager, tmp_path: Path) -> None:
    program = fake_pt(
        tmp_path,
        """
        import json
        env = {k: v for k, v in os.environ.items() if k.startswith("TOR_PT_")}
        state = os.environ["TOR_PT_STATE_LOCATION"]
        with open(os.path.join(state, "env.json"), "w") as out:
            json.dump(env, out)
        print("VERSION-ERROR recorded", flush=True)
        """,
    )
    await dial_fake(program, manager, transport="custom_pt")
    state = tmp_path / "pt" / "custom_pt"
    assert (state / "env.json").read_text() == (
        '{"TOR_PT_MANAGED_TRANSPORT_VER": "1", '
        f'"TOR_PT_STATE_LOCATION": "{state}", '
        '"TOR_PT_EXIT_ON_STDIN_CLOSE": "1", "TOR_PT_CLIENT_TRANSPORTS": "custom_pt"}'
    )
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


async def test_a_child_that_ignores_stdin_and_sigterm_is_killed(tmp_path: Path) -> None:
    program = fake_pt(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("VERSION 1")
        print("CMETHOD obfs4 socks5 127.0.0.1:9", flush=True)
        print("CMETHODS DONE", flush=True)
        while True:
            time.sleep(1)
        """,
    )
    manager = PtManager(tmp_path / "pt", stop_grace=0.2)
    client = manager.client(str(program), "obfs4")
    method, child = await client.method()
    assert method.address == Endpoint("127.0.0.1", 9)
    pid = client.pid
    assert pid is not None
    async with asyncio.timeout(5):
        await manager.aclose()
    assert child.process.returncode == -signal.SIGKILL
    assert not alive(pid)


RECORDING_PT = """
import socket, threading
PROTOCOL = "{protocol}"
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("VERSION 1")
print(f"CMETHOD obfs4 {{PROTOCOL}} 127.0.0.1:{{server.getsockname()[1]}}")
print("CMETHODS DONE", flush=True)

def serve():
    conn, _ = server.accept()
    stream = conn.makefile("rb")
    if PROTOCOL == "socks5":
        stream.read(stream.read(2)[1])  # VER NMETHODS, then the METHODS
        conn.sendall(b"\\x05\\x02")  # user/password
        stream.read(1)
        login = stream.read(stream.read(1)[0])
        login += b"|" + stream.read(stream.read(1)[0])
        conn.sendall(b"\\x01\\x00")
        stream.read(4 + 4 + 2)  # VER CMD RSV ATYP=1 IPv4 PORT
        conn.sendall(b"\\x05\\x00\\x00\\x01" + bytes(6))
    else:
        stream.read(8)  # VN CD PORT IPv4
        login = b""
        while (byte := stream.read(1)) != b"\\x00":
            login += byte
        conn.sendall(b"\\x00\\x5a" + bytes(6))
    with open(os.path.join(os.environ["TOR_PT_STATE_LOCATION"], "login"), "wb") as out:
        out.write(login)
    while data := conn.recv(65536):
        conn.sendall(data)

threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
"""


@pytest.mark.parametrize("protocol", ["socks5", "socks4"])
async def test_arguments_reach_the_pt_as_the_spec_says(
    manager: PtManager, tmp_path: Path, protocol: str
) -> None:
    """Long arguments: SOCKS5 carries the first 255 bytes as the username and the rest as
    the password; SOCKS4 carries them all as the user id."""
    program = fake_pt(tmp_path, RECORDING_PT.format(protocol=protocol))
    pad = "x;y=z\\" * 25
    chain = (
        f"pt:obfs4?addr=192.0.2.3:443&cert={CERT}&iat-mode=0&pad={quote(pad)}&bin={program}"
        " | socks5://127.0.0.1:1080"
    )
    pt = parse_chain(chain).build(DialOptions(pluggable=manager)).inner
    stream = await pt.dial(Endpoint("127.0.0.1", 1080))
    stream.write(b"echo")
    assert await stream.readexactly(4) == b"echo"
    stream.close()
    escaped = pad.replace("\\", "\\\\").replace(";", "\\;").replace("=", "\\=")
    encoded = f"cert={CERT};iat-mode=0;pad={escaped}".encode()
    assert len(encoded) > 255
    login = (tmp_path / "pt" / "obfs4" / "login").read_bytes()
    if protocol == "socks5":
        assert login == encoded[:255] + b"|" + encoded[255:]
    else:
        assert login == encoded


async def test_nothing_starts_after_the_manager_closed(tmp_path: Path) -> None:
    program = fake_pt(
        tmp_path, 'print("VERSION 1\\nCMETHOD obfs4 socks5 127.0.0.1:9\\nCMETHODS DONE")\n'
    )
    manager = PtManager(tmp_path / "pt")
    client = manager.client(str(program), "obfs4")
    await manager.aclose()
    with pytest.raises(DialError, match="shutting down"):
        await client.method()
    with pytest.raises(DialError, match="shutting down"):
        manager.client(str(program), "obfs4")
    assert client.starts == 0


async def test_logs_and_status_lines_go_to_the_debug_log(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="detour.pt")
    program = fake_pt(
        tmp_path,
        """
        print("VERSION 1")
        print('LOG SEVERITY=notice MESSAGE="bridge \\\\"up\\\\"\\\\x1b[2J"')
        print("STATUS TRANSPORT=obfs4 CONNECT=Success")
        print("CMETHOD obfs4 socks5 127.0.0.1:9")
        print("CMETHODS DONE", flush=True)
        print("some stderr words", file=sys.stderr, flush=True)
        sys.stdin.read()
        """,
    )
    manager = PtManager(tmp_path / "pt")
    try:
        await manager.client(str(program), "obfs4").method()
    finally:
        await manager.aclose()  # stderr is read to its end before the child is forgotten
    assert "obfs4 client (fake-pt) stderr: some stderr words" in caplog.text
    assert 'obfs4 client (fake-pt): notice bridge "up"' in caplog.text
    assert "\x1b" not in caplog.text
    assert "status obfs4 CONNECT=Success" in caplog.text


# --- snowflake-client: another real program, launched only --------------------------------------


async def test_snowflake_client_launches(tmp_path: Path) -> None:
    """The managed-proxy handshake with Debian's snowflake-client. No connection is made
    through it: that would reach the public snowflake broker."""
    program = peers.require_peer("snowflake-client", "snowflake-client")
    manager = PtManager(tmp_path / "pt")
    try:
        method, _ = await manager.client(program, "snowflake").method()
    finally:
        await manager.aclose()
    assert method.transport == "snowflake" and method.protocol == "socks5"
    assert method.address.ip is not None and method.address.ip.is_loopback


# --- reloads ------------------------------------------------------------------------------


async def test_a_reload_keeps_an_unchanged_pt_child_and_stops_a_removed_one_after_its_use(
    bridge: peers.Peer, forward_target: Engine, client_engine, echo_origin
) -> None:
    chain = pt_chain(bridge, forward_target)
    engine = await client_engine(chain, direct="direct")
    reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", echo_origin.port)
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"
    [client] = engine.pluggable.clients
    pid = client.pid
    assert pid is not None

    # The same pt route: the same child goes on serving new connections.
    same = config_text(routes={"pt": chain, "direct": "direct"}, default="pt")
    await engine.reload(parse_config(same))
    again_reader, again_writer = await open_socks5(
        engine.mixed_address, "127.0.0.1", echo_origin.port
    )
    again_writer.write(b"two")
    assert await again_reader.readexactly(3) == b"two"
    again_writer.close()
    assert engine.pluggable.clients == [client] and client.pid == pid and client.starts == 1

    # No pt route any more: the child stays while a connection through it is open ...
    await engine.reload(parse_config(config_text(routes={"direct": "direct"})))
    await asyncio.sleep(0.2)
    assert alive(pid)
    writer.write(b"three")
    assert await reader.readexactly(5) == b"three"
    # ... and stops when that connection ends.
    writer.close()
    for _ in range(400):  # up to 20 s, a safety net
        if not alive(pid) and not engine.pluggable.clients:
            break
        await asyncio.sleep(0.05)
    assert not alive(pid) and not engine.pluggable.clients
