"""The mixed listener's rules for LAN clients, on loopback: clients from 127.0.0.2 and up
stand for LAN devices (the listener is told only 127.0.0.1 is this machine's own user).

Access (allow-list and login together), the destination policy (services only, never
loopback/private/this machine, also after resolution), refusal replies and their log lines,
the connection and handshake limits (a slowloris from one address does not starve another),
and bounded buffering for a client that never reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import sys

import pytest

from helper.proxy.logins import FREE_FAILURES
from helper.proxy.relay import CHUNK, WRITE_HIGH_WATER
from tests.conftest import config_text
from transports.guard import AddressPolicy

LAN_A = "127.0.0.2"
LAN_B = "127.0.0.3"
ONLY_THIS_MACHINE = (ipaddress.ip_network("127.0.0.1/32"),)
# For destinations on loopback to be reachable by "LAN" clients in these tests, loopback
# stands for the internet and this machine's own addresses are not looked up.
LOOPBACK_IS_INTERNET = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])

SERVICE = """
[[service]]
name = "origin"
domains = ["origin.test"]
"""


def _lan(engine, policy: AddressPolicy | None = None):
    listener = engine.listener
    listener.local_clients = ONLY_THIS_MACHINE
    if policy is not None:
        listener.policy = policy
    return listener


async def _open(address: tuple[str, int], source: str):
    return await asyncio.open_connection(*address, local_addr=(source, 0), limit=1 << 20)


def _socks5_connect(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    return b"\x05\x01\x00" + addr + struct.pack("!H", port)


async def socks5(address, source: str, host: str, port: int, login: tuple[str, str] | None = None):
    """A SOCKS5 CONNECT from `source`; returns (reply code, reader, writer)."""
    reader, writer = await _open(address, source)
    writer.write(b"\x05\x01\x02" if login else b"\x05\x01\x00")
    _, method = await reader.readexactly(2)
    if method == 0x02:
        assert login is not None
        user, password = (x.encode() for x in login)
        writer.write(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        _, status = await reader.readexactly(2)
        if status != 0:
            writer.close()
            return -1, reader, writer
    elif method != 0x00:
        writer.close()
        return -method, reader, writer
    writer.write(_socks5_connect(host, port))
    head = await reader.readexactly(4)
    await reader.readexactly({1: 4, 4: 16}.get(head[3], 0) + 2)
    return head[1], reader, writer


async def raw(address, source: str, payload: bytes, timeout: float = 5) -> bytes:
    reader, writer = await _open(address, source)
    try:
        writer.write(payload)
        async with asyncio.timeout(timeout):
            try:
                return await reader.read()
            except ConnectionResetError:
                return b"<reset>"
    finally:
        writer.close()


# --- access ---------------------------------------------------------------------------------


async def test_allow_list_and_login_together(start_engine, http_origin, caplog) -> None:
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(
        config_text(
            default="direct",
            extra=f"""
            [listen]
            allow = ["{LAN_A}/32"]
            users = [{{ name = "alice", password = "s3cret-pw" }}]
            remote_default = "default"
            """,
        )
        .replace('[listen]\nmixed = "127.0.0.1:0"\nhandshake_timeout = "2s"\n', "")
        .replace("[listen]\n", '[listen]\nmixed = "127.0.0.1:0"\nhandshake_timeout = "2s"\n', 1)
    )
    address = engine.mixed_address
    _lan(engine, LOOPBACK_IS_INTERNET)
    # Not allow-listed: closed before any handshake (the greeting gets no answer at all).
    assert await raw(address, LAN_B, b"\x05\x01\x02") in (b"", b"<reset>")
    assert "refused client 127.0.0.3" in caplog.text and "listen.allow" in caplog.text
    # Allow-listed but no login: the login is still required.
    code, _, writer = await socks5(address, LAN_A, "127.0.0.1", http_origin.port)
    assert code == -0xFF
    code, _, writer = await socks5(
        address, LAN_A, "127.0.0.1", http_origin.port, ("alice", "wrong")
    )
    assert code == -1
    # Both: served.
    code, reader, writer = await socks5(
        address, LAN_A, "127.0.0.1", http_origin.port, ("alice", "s3cret-pw")
    )
    assert code == 0
    writer.write(b"GET /lan HTTP/1.0\r\n\r\n")
    assert (await reader.read()).endswith(b"/lan\n")
    writer.close()
    assert "s3cret-pw" not in caplog.text


def _login_config(extra: str = "") -> str:
    return (
        config_text(
            default="direct",
            extra=f"""
            [listen]
            users = [{{ name = "alice", password = "s3cret-pw" }}]
            remote_default = "default"
            {extra}
            """,
        )
        .replace('[listen]\nmixed = "127.0.0.1:0"\nhandshake_timeout = "2s"\n', "")
        .replace("[listen]\n", '[listen]\nmixed = "127.0.0.1:0"\nhandshake_timeout = "2s"\n', 1)
    )


async def _wrong_socks5_login(address, source: str) -> bytes:
    """Greeting and a wrong login in one go; the answer to the login (2 bytes, or less)."""
    reader, writer = await _open(address, source)
    try:
        writer.write(b"\x05\x01\x02" + b"\x01\x05alice\x05wrong")
        assert await reader.readexactly(2) == b"\x05\x02"
        return await reader.read(2)
    finally:
        writer.close()


async def _wrong_http_login(address, source: str) -> bytes:
    reader, writer = await _open(address, source)
    try:
        writer.write(
            b"CONNECT origin.test:80 HTTP/1.1\r\nHost: origin.test:80\r\n"
            b"Proxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\n\r\n"  # alice:wrong
        )
        return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize("protocol", ["socks5", "http"])
async def test_a_burst_of_wrong_logins_is_slowed_and_its_log_bounded(
    start_engine, http_origin, caplog, protocol
) -> None:
    """30 wrong logins at once from one address: each is answered as a failed login, but
    only the first few are checked (then one per doubling interval, within half the 2 s
    handshake timeout); the rest are refused unchecked. The log holds at most its throttle's
    20 lines of them. Another address is not slowed, and logs in at once."""
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(_login_config())
    address = engine.mixed_address
    _lan(engine, LOOPBACK_IS_INTERNET)
    wrong = _wrong_socks5_login if protocol == "socks5" else _wrong_http_login
    # 30: under the 32 handshakes one client may have open (listen.max_handshakes_per_client)
    answers = await asyncio.gather(*(wrong(address, LAN_A) for _ in range(30)))
    refusal = b"\x01\x01" if protocol == "socks5" else b"HTTP/1.1 407"
    assert all(answer.startswith(refusal) for answer in answers), answers
    logins = engine.listener.admission.logins
    # 5 free, then 1 s, then 3 s away (past the patience): 6; a slow machine that spreads
    # the burst over more than a second lets one or two more through.
    assert FREE_FAILURES < logins.checked(LAN_A) <= FREE_FAILURES + 3
    assert logins.refused == 30 - logins.checked(LAN_A)
    lines = [r for r in caplog.records if "login" in r.getMessage() and LAN_A in r.getMessage()]
    assert 0 < len(lines) <= 20, len(lines)
    assert any("not checked" in r.getMessage() for r in lines)
    # Another device logs in at once.
    code, _, writer = await socks5(
        address, LAN_B, "127.0.0.1", http_origin.port, ("alice", "s3cret-pw")
    )
    writer.close()
    assert code == 0
    assert "s3cret-pw" not in caplog.text


async def test_two_proxy_authorization_fields_are_refused_whichever_comes_first(
    start_engine, http_origin, caplog
) -> None:
    """A request with two logins is a 400, not a login with the first of them (which a
    front that appends its own field, or a client's bug, would make the wrong one)."""
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(_login_config())
    right = b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0LXB3\r\n"  # alice:s3cret-pw
    wrong = b"Proxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\n"
    for fields in (right + wrong, wrong + right, right + right):
        reader, writer = await _open(engine.mixed_address, LAN_A)
        writer.write(
            f"CONNECT 127.0.0.1:{http_origin.port} HTTP/1.1\r\n".encode() + fields + b"\r\n"
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"more than one Proxy-Authorization field" in answer
    lines = [r.getMessage() for r in caplog.records]
    lines = [line for line in lines if "Proxy-Authorization fields" in line]
    assert len(lines) == 3 and all(LAN_A in line for line in lines), lines
    assert engine.listener.admission.logins.checked(LAN_A) == 0  # none was checked


async def test_a_right_login_clears_the_back_off(start_engine, http_origin) -> None:
    engine = await start_engine(_login_config())
    address = engine.mixed_address
    _lan(engine, LOOPBACK_IS_INTERNET)
    for _ in range(FREE_FAILURES - 1):
        assert await _wrong_socks5_login(address, LAN_A) == b"\x01\x01"
    code, _, writer = await socks5(
        address, LAN_A, "127.0.0.1", http_origin.port, ("alice", "s3cret-pw")
    )
    writer.close()
    assert code == 0
    assert engine.listener.admission.logins.checked(LAN_A) == 0


# --- destination policy ---------------------------------------------------------------------


@pytest.fixture
async def lan_engine(start_engine):
    engine = await start_engine(config_text(default="direct", extra=SERVICE))
    return engine


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("127.0.0.1:22", "a loopback address"),
        ("10.1.2.3:443", "a private address"),
        ("192.168.1.1:80", "a private address"),
        ("169.254.169.254:80", "a link-local address"),
        ("[::1]:22", "a loopback address"),
        ("100.64.0.1:443", "a shared"),
        ("8.8.8.8:53", "belongs to no configured service"),
    ],
)
async def test_lan_client_refused_destinations(lan_engine, caplog, target, why) -> None:
    caplog.set_level(logging.INFO, "detour")
    _lan(lan_engine)
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    address = lan_engine.mixed_address
    code, _, writer = await socks5(address, LAN_A, host, int(port))
    writer.close()
    assert code == 0x02  # connection not allowed by ruleset
    # SOCKS4 (literal IPv4 only) and HTTP CONNECT get their own refusals.
    if ":" not in host:
        packed = ipaddress.ip_address(host).packed
        reply = await raw(
            address, LAN_A, b"\x04\x01" + struct.pack("!H", int(port)) + packed + b"\x00"
        )
        assert reply[:2] == b"\x00\x5b"
    reply = await raw(
        address, LAN_A, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 403")
    assert why.encode() in reply
    lines = [r.getMessage() for r in caplog.records if "refused client" in r.getMessage()]
    assert lines and "127.0.0.2" in lines[0] and host in lines[0] and why in lines[0]


async def test_name_resolving_to_loopback_is_refused(start_engine, http_origin, caplog) -> None:
    """DNS rebinding: origin.test is a service, but it resolves to 127.0.0.1."""
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(config_text(extra=SERVICE))
    _lan(engine)
    code, _, writer = await socks5(engine.mixed_address, LAN_A, "origin.test", http_origin.port)
    writer.close()
    assert code == 0x02
    assert "origin.test resolves to a loopback address" in caplog.text
    # The refusal says nothing about the route: it is not counted as a failure.
    assert engine.router.health.order("origin", engine.router.routes) == engine.router.routes


async def test_services_only_unless_widened(start_engine, http_origin) -> None:
    engine = await start_engine(config_text(default="direct", extra=SERVICE))
    _lan(engine, LOOPBACK_IS_INTERNET)
    address = engine.mixed_address
    code, reader, writer = await socks5(address, LAN_A, "origin.test", http_origin.port)
    assert code == 0  # a service: allowed
    writer.close()
    code, _, writer = await socks5(address, LAN_A, "127.0.0.1", http_origin.port)
    writer.close()
    assert code == 0x02  # no service, remote_default = "deny"
    widened = await start_engine(
        config_text(default="direct", extra=SERVICE).replace(
            'handshake_timeout = "2s"\n', 'handshake_timeout = "2s"\nremote_default = "default"\n'
        )
    )
    _lan(widened, LOOPBACK_IS_INTERNET)
    code, _, writer = await socks5(widened.mixed_address, LAN_A, "127.0.0.1", http_origin.port)
    writer.close()
    assert code == 0


async def test_loopback_clients_keep_todays_rules(lan_engine, http_origin) -> None:
    code, reader, writer = await socks5(
        lan_engine.mixed_address, "127.0.0.1", "127.0.0.1", http_origin.port
    )
    assert code == 0
    writer.write(b"GET /local HTTP/1.0\r\n\r\n")
    assert (await reader.read()).endswith(b"/local\n")
    writer.close()


# --- limits ---------------------------------------------------------------------------------


def _half_open(address: tuple[str, int], source: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        sock.connect_ex(address)
        sockets.append(sock)
    return sockets


async def test_slowloris_from_one_address_does_not_starve_another(
    lan_engine, http_origin, caplog
) -> None:
    caplog.set_level(logging.INFO, "detour")
    address = lan_engine.mixed_address
    listener = lan_engine.listener
    held: list[socket.socket] = []
    try:
        for _ in range(10):
            held += _half_open(address, LAN_A, 100)
            await asyncio.sleep(0.01)  # let the listener accept
        for sock in held:
            with contextlib.suppress(OSError):
                sock.send(b"\x05")  # a greeting that never completes
        await asyncio.sleep(0.2)
        assert listener.book.handshaking[LAN_A] <= listener.book.limits.handshakes_per_client
        code, reader, writer = await socks5(address, LAN_B, "127.0.0.1", http_origin.port)
        assert code == 0
        writer.write(b"GET /other HTTP/1.0\r\n\r\n")
        assert (await reader.read()).endswith(b"/other\n")
        writer.close()
    finally:
        for sock in held:
            sock.close()
    refusals = [r for r in caplog.records if "at the limit" in r.getMessage()]
    assert 1 <= len(refusals) <= 25  # throttled: not one line per connection


async def test_connection_limits_per_client_and_total(start_engine, echo_origin) -> None:
    engine = await start_engine(
        config_text().replace(
            'handshake_timeout = "2s"\n',
            'handshake_timeout = "2s"\nmax_connections = 3\nmax_connections_per_client = 2\n',
        )
    )
    address = engine.mixed_address
    opened = []
    for source in (LAN_A, LAN_A):
        code, reader, writer = await socks5(address, source, "127.0.0.1", echo_origin.port)
        assert code == 0
        opened.append(writer)
    # A third from the same client is closed at once; another client still gets in.
    assert await raw(address, LAN_A, b"\x05\x01\x00") in (b"", b"<reset>")
    code, _, writer = await socks5(address, LAN_B, "127.0.0.1", echo_origin.port)
    assert code == 0
    opened.append(writer)
    # Now the total is reached.
    assert await raw(address, "127.0.0.4", b"\x05\x01\x00") in (b"", b"<reset>")
    for writer in opened:
        writer.close()
    for _ in range(100):
        if engine.listener.book.open_total == 0:
            break
        await asyncio.sleep(0.05)
    code, _, writer = await socks5(address, "127.0.0.4", "127.0.0.1", echo_origin.port)
    assert code == 0
    writer.close()


async def test_a_client_that_never_reads_does_not_grow_buffers(lan_engine) -> None:
    offered = 64 << 20
    sent = [0]

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = b"x" * (1 << 16)
        with contextlib.suppress(ConnectionError):
            while sent[0] < offered:
                writer.write(block)
                await writer.drain()
                sent[0] += len(block)
        writer.close()

    server = await asyncio.start_server(firehose, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.connect(lan_engine.mixed_address)
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"\x05\x01\x00" + _socks5_connect("127.0.0.1", port))
        assert (await reader.readexactly(12))[:4] == b"\x05\x00\x05\x00"
        writer.transport.pause_reading()  # and never read again
        (active,) = lan_engine.server.connections.values()
        last, stable = -1, 0
        for _ in range(200):  # until detour stops reading from the destination
            await asyncio.sleep(0.05)
            stable = stable + 1 if active.stats.down == last else 0
            last = active.stats.down
            if stable >= 10:
                break
        assert stable >= 10, "detour kept reading from the destination"
        # What detour holds beyond the kernel's socket buffers is one write buffer's worth.
        kernel = 8 << 20  # generous: both sockets' buffers on loopback
        assert active.stats.down <= kernel + WRITE_HIGH_WATER + CHUNK
        assert sent[0] < offered
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_an_upstream_proxy_on_loopback_still_carries_lan_clients(
    start_engine, http_origin
) -> None:
    """The policy is about where clients go, not how detour gets there: a route through a
    SOCKS proxy on 127.0.0.1 works for LAN clients. That proxy resolves the name itself, so
    what the name becomes is its business (docs/router.md says so): here "localhost"."""
    from tests.support import peers

    with peers.microsocks() as proxy:
        engine = await start_engine(
            config_text(
                routes={"upstream": f"socks5://127.0.0.1:{proxy.port}"},
                extra='[[service]]\nname = "local"\ndomains = ["localhost"]\n',
            )
        )
        _lan(engine)
        code, reader, writer = await socks5(
            engine.mixed_address, LAN_A, "localhost", http_origin.port
        )
        assert code == 0
        writer.write(b"GET /via-proxy HTTP/1.0\r\nHost: localhost\r\n\r\n")
        assert (await reader.read()).endswith(b"/via-proxy\n")
        writer.close()
        # A literal loopback address is refused before any route is tried.
        code, _, writer = await socks5(engine.mixed_address, LAN_A, "127.0.0.1", http_origin.port)
        writer.close()
        assert code == 0x02


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent is Linux-only")
async def test_engine_runs_a_transparent_listener(start_engine, caplog) -> None:
    """Wired into the engine with the mixed listener's limits and connection table; a
    connection made straight to it (not redirected) is closed and says why."""
    caplog.set_level(logging.INFO, "detour")
    engine = await start_engine(
        config_text().replace(
            'handshake_timeout = "2s"\n', 'handshake_timeout = "2s"\ntransparent = "127.0.0.1:0"\n'
        )
    )
    transparent = engine.transparent
    assert transparent is not None
    assert transparent.book is engine.listener.book
    reply = await raw(transparent.sockets[0], "127.0.0.1", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply in (b"", b"<reset>")
    assert "not a redirected connection" in caplog.text or "refused a loop" in caplog.text
    assert engine.listener.book.open_total == 0
