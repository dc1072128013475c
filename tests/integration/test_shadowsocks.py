"""Shadowsocks against real servers: shadowsocks-libev's ss-server for every AEAD cipher,
sing-box (an independent implementation) for the 2022 ciphers, with and without identity
headers; Outline dynamic keys served over HTTPS; and servers that replay or alter their
answers, which detour must reject (the connection is reset, never passed on)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from helper.config import parse_config
from helper.engine import Engine
from tests.conftest import config_text
from tests.support import peers
from tests.support.clients import open_socks5
from tests.support.integrity import run_integrity
from tests.support.sizes import transfer_size
from transports import DialOptions, Endpoint, parse_chain
from transports.shadowsocks import ServerCodec, StreamError
from transports.shadowsocks.server import shadowsocks_server

pytestmark = pytest.mark.peer

SIZE = transfer_size(64 << 20)  # 16 MiB in make test: tests/support/sizes.py
AEAD = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-192-gcm", "aes-128-gcm"]
EDITION_2022 = {
    "2022-blake3-aes-128-gcm": 16,
    "2022-blake3-aes-256-gcm": 32,
    "2022-blake3-chacha20-poly1305": 32,
}


async def integrity_through(chain: str, origin_port: int, size: int, half_close: bool) -> None:
    config = parse_config(config_text(routes={"ss": chain}, default="ss"))
    async with Engine(config) as engine:
        reader, writer = await open_socks5(engine.mixed_address, "127.0.0.1", origin_port)
        result = await run_integrity(reader, writer, up=size, down=size, half_close=half_close)
        assert result.received == size
        assert result.ok_down, "bytes from the server arrived altered"
        assert result.ok_up, "the server's digest of what we sent differs, or never came"


@pytest.mark.slow
@pytest.mark.parametrize("method", AEAD)
async def test_64mib_each_way_through_ss_server(method: str, integrity_origin) -> None:
    """ss-server closes both directions at the client's end of stream: the exchange
    announces its length instead of half-closing."""
    with peers.ss_server(method, "a pass:word/with@signs") as server:
        await integrity_through(peers.ss_link(server), integrity_origin.port, SIZE, False)


def ss2022_inbound(method: str, users: int = 0) -> tuple[dict, str]:
    """A sing-box Shadowsocks inbound and the client's password (iPSK:uPSK with users)."""
    size = EDITION_2022[method]
    key = base64.b64encode(os.urandom(size)).decode()
    inbound = {"type": "shadowsocks", "method": method, "password": key}
    if not users:
        return inbound, key
    user_keys = [base64.b64encode(os.urandom(size)).decode() for _ in range(users)]
    inbound["users"] = [{"name": f"u{i}", "password": k} for i, k in enumerate(user_keys)]
    return inbound, f"{key}:{user_keys[-1]}"


@pytest.mark.slow
@pytest.mark.parametrize("method", list(EDITION_2022))
async def test_64mib_each_way_through_sing_box_2022_with_half_close(
    method: str, integrity_origin
) -> None:
    inbound, password = ss2022_inbound(method)
    with peers.sing_box_server(inbound) as server:
        link = f"ss://{method}:{quote(password, safe='')}@127.0.0.1:{server.port}"
        await integrity_through(link, integrity_origin.port, SIZE, True)


@pytest.mark.parametrize("method", ["2022-blake3-aes-128-gcm", "2022-blake3-aes-256-gcm"])
async def test_identity_headers_reach_a_multi_user_sing_box(method: str, integrity_origin) -> None:
    inbound, password = ss2022_inbound(method, users=3)
    with peers.sing_box_server(inbound) as server:
        link = f"ss://{method}:{quote(password, safe='')}@127.0.0.1:{server.port}"
        await integrity_through(link, integrity_origin.port, 1 << 20, True)


async def test_a_wrong_key_gets_no_answer_and_no_data(integrity_origin) -> None:
    """A wrong password is not visible at the dial (Shadowsocks has no handshake); the
    server says nothing (it must not answer probes), and no byte reaches the client."""
    with peers.ss_server("aes-256-gcm", "right") as server:
        dialer = parse_chain(peers.ss_link(server, password="wrong")).build()
        stream = await dialer.dial(Endpoint("127.0.0.1", integrity_origin.port))
        stream.write(b"\0" * 24)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                assert await stream.read() == b""
        stream.close()


# --- Outline dynamic keys --------------------------------------------------------------


@pytest.fixture
def key_server(test_ca) -> Iterator[tuple[int, dict[str, bytes]]]:
    """An HTTPS server that answers each path with a config body set by the test."""
    bodies: dict[str, bytes] = {}
    loop = asyncio.new_event_loop()
    context = test_ca.server_context("keys.test", "127.0.0.1")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            body = bodies.get(path)
            if body is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            elif body.startswith(b"REDIRECT "):
                target = body.split(b" ", 1)[1]
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n0\r\n\r\n"
                )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    import threading

    ready = threading.Event()
    port: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0, ssl=context))
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield port[0], bodies
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.mark.parametrize("form", ["ss-link", "legacy-json", "yaml", "yaml-first-supported"])
async def test_outline_dynamic_key_in_each_documented_form(
    form: str, key_server, test_ca, integrity_origin, tmp_path
) -> None:
    port, bodies = key_server
    with peers.ss_server("chacha20-ietf-poly1305", "outline-pw") as server:
        address = f"127.0.0.1:{server.port}"
        bodies["/k"] = {
            "ss-link": (peers.ss_link(server) + "#from-the-key").encode(),
            "legacy-json": (
                b'{"server": "127.0.0.1", "server_port": %d, "password": "outline-pw", '
                b'"method": "chacha20-ietf-poly1305", "prefix": "\\u0016\\u0003\\u0001"}'
                % server.port
            ),
            "yaml": f"""
transport:
  $type: tcpudp
  tcp: &shared
    $type: shadowsocks
    endpoint: {address}
    cipher: chacha20-ietf-poly1305
    secret: outline-pw
    prefix: "POST "
  udp: *shared
""".encode(),
            "yaml-first-supported": f"""
transport:
  $type: tcpudp
  tcp:
    $type: shadowsocks
    endpoint:
      $type: first-supported
      options:
        - $type: websocket
          url: wss://cdn.example/SECRET/tcp
        - {{$type: dial, address: "{address}"}}
    cipher: chacha20-ietf-poly1305
    secret: outline-pw
""".encode(),
        }[form]
        (tmp_path / "ca.pem").write_bytes(test_ca.ca_path.read_bytes())
        text = config_text(
            routes={"outline": f"ssconf://127.0.0.1:{port}/k#My key"},
            default="outline",
            extra=f'[tls]\nextra_ca = ["{tmp_path / "ca.pem"}"]\n',
        )
        async with Engine(parse_config(text)) as engine:
            reader, writer = await open_socks5(
                engine.mixed_address, "127.0.0.1", integrity_origin.port
            )
            result = await run_integrity(reader, writer, 1 << 20, 1 << 20, half_close=False)
            assert result.ok


async def test_outline_errors_reach_the_user(key_server, test_ca) -> None:
    port, bodies = key_server
    bodies["/expired"] = b"error:\n  message: Quota exceeded\n  details: Used 100GB of 100GB\n"
    bodies["/moved"] = b"REDIRECT https://127.0.0.1:%d/expired" % port
    context = test_ca.client_context()
    for path in ("/expired", "/moved"):
        dialer = parse_chain(f"ssconf://127.0.0.1:{port}{path}").build(DialOptions(tls=context))
        with pytest.raises(ConnectionError, match="Quota exceeded - Used 100GB of 100GB"):
            await dialer.dial(Endpoint("example.com", 443))
    dialer = parse_chain(f"ssconf://127.0.0.1:{port}/missing").build(DialOptions(tls=context))
    with pytest.raises(ConnectionError, match="answered HTTP 404") as caught:
        await dialer.dial(Endpoint("example.com", 443))
    assert "missing" not in str(caught.value)  # the key's path is its secret


# --- servers that replay or alter their answers -------------------------------------------


class EvilServer:
    """A Shadowsocks server (detour's own codec) that answers the first connection
    honestly and then misbehaves as told: replays that answer, or flips a byte."""

    def __init__(self, method: str, password: str, mode: str) -> None:
        self.server = shadowsocks_server("127.0.0.1", 1, method, password)
        self.mode = mode
        self.recorded = b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = ServerCodec(self.server.key)
        try:
            while codec.target is None:
                data = await reader.read(65536)
                if not data:
                    return
                codec.open(data)
            answer = codec.seal(b"the answer " * 50)
            if not self.recorded:
                self.recorded = answer
            elif self.mode == "replay":
                answer = self.recorded
            elif self.mode == "tamper":
                answer = answer[:-20] + bytes([answer[-20] ^ 1]) + answer[-19:]
            writer.write(answer)
            await writer.drain()
            await reader.read()
        except (StreamError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("method", ["aes-128-gcm", "2022-blake3-aes-128-gcm"])
@pytest.mark.parametrize("mode", ["replay", "tamper"])
async def test_replayed_or_altered_answers_reset_the_connection(method: str, mode: str) -> None:
    password = "pw" if "2022" not in method else base64.b64encode(bytes(16)).decode()
    evil = EvilServer(method, password, mode)
    server = await asyncio.start_server(evil.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dialer = parse_chain(f"ss://{method}:{quote(password, safe='')}@127.0.0.1:{port}").build()
        first = await dialer.dial(Endpoint("example.com", 80))
        first.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await first.readexactly(11)) == b"the answer "
        first.close()
        second = await dialer.dial(Endpoint("example.com", 80))
        second.write(b"GET / HTTP/1.0\r\n\r\n")
        why = "not for this request|seen before" if mode == "replay" else "authentication"
        with pytest.raises(ConnectionResetError, match=why):
            async with asyncio.timeout(10):
                while await second.read():
                    pass
    finally:
        server.close()
