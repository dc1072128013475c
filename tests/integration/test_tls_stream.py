"""TLS over detour Streams (transports/tls.py) on real sockets: HTTPS to the aiohttp origin
directly, through `tlsfrag:sni` (the ClientHello seen on the wire as several records) and
through detour's own SOCKS5 listener; every handshake failure a probe must name; 8 MiB each
way on both event loops; and OpenSSL's own server (`openssl s_server`) for what Python's
ssl cannot send: a TLS 1.3 KeyUpdate that asks for one back, a TLS 1.2 renegotiation."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import config_text
from tests.support import origins
from tests.support.peers import free_port, require_peer
from tests.support.tls import read_records
from transports import DialError, DialOptions, Failure, Op, Stream, parse_chain
from transports.base import Endpoint
from transports.resolver import StaticResolver
from transports.tcp import SocketStream, StreamProtocol, connect_tcp
from transports.tls import TlsStream, tls_accept, tls_connect
from transports.wrapped import WrappedStream

HOSTS = StaticResolver({"origin.test": ["127.0.0.1"]})
Handler = Callable[[SocketStream], Awaitable[None]]


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


# --- a TCP server that hands each connection to a coroutine as a SocketStream ---------------


@contextlib.asynccontextmanager
async def stream_server(handler: Handler) -> AsyncIterator[int]:
    """Listen on 127.0.0.1 and run `handler` for each connection; yields the port. Handlers
    still running at the end are cancelled."""
    tasks: set[asyncio.Task[None]] = set()

    class Accepted(StreamProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            assert self.transport is not None
            tasks.add(asyncio.ensure_future(handler(SocketStream(self.transport, self))))

    server = await asyncio.get_running_loop().create_server(Accepted, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_client_hello(stream: Stream) -> bytes:
    header = await stream.readexactly(5)
    return header + await stream.readexactly(int.from_bytes(header[3:5], "big"))


async def https_get(tls: TlsStream, path: str) -> bytes:
    tls.write(f"GET {path} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n".encode())
    await tls.drain()
    response = bytearray()
    while chunk := await tls.read():
        response += chunk
    return bytes(response)


# --- real servers -------------------------------------------------------------------------


@pytest.fixture
async def recorder(https_origin):
    origin = await origins.start_recorder(https_origin.address)
    yield origin
    await origins.stop(origin)


async def test_https_over_a_plain_connection(https_origin, test_ca) -> None:
    stream = await connect_tcp(*https_origin.address)
    tls = await tls_connect(stream, test_ca.client_context(), "origin.test", timeout=5)
    assert tls.get_extra_info("peername") == stream.get_extra_info("peername")
    response = await https_get(tls, "/plain")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"hello from origin origin.test/plain\n")
    tls.close()
    await tls.wait_closed()


async def test_https_through_tlsfrag(recorder, test_ca) -> None:
    """The ClientHello leaves in one write, so `tlsfrag:sni` can cut it: on the wire it is
    two records, neither holding the whole name, and the server still completes the
    handshake."""
    dialer = parse_chain("tlsfrag:sni").build(DialOptions(resolver=HOSTS))
    stream = await dialer.dial(Endpoint("origin.test", recorder.port))
    tls = await tls_connect(stream, test_ca.client_context(), "origin.test", timeout=5)
    response = await https_get(tls, "/fragmented")
    assert response.endswith(b"hello from origin origin.test/fragmented\n")
    tls.close()

    [wire] = recorder.server.received
    first_size = int.from_bytes(wire[3:5], "big")
    second_size = int.from_bytes(wire[5 + first_size + 3 : 5 + first_size + 5], "big")
    first, second = read_records(wire[: 5 + first_size + 5 + second_size])
    assert first[0] == second[0] == 0x16
    assert b"origin.test" not in first[2] and b"origin.test" not in second[2]
    assert b"origin.test" in first[2] + second[2]


async def test_https_through_detours_socks5_listener(start_engine, https_origin, test_ca) -> None:
    engine = await start_engine(config_text())
    host, port = engine.mixed_address
    dialer = parse_chain(f"socks5://{host}:{port}").build()
    stream = await dialer.dial(Endpoint("origin.test", https_origin.port))
    tls = await tls_connect(stream, test_ca.client_context(), "origin.test", timeout=5)
    response = await https_get(tls, "/socks")
    assert response.endswith(b"hello from origin origin.test/socks\n")
    tls.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_eight_mib_each_way_over_tcp(loop, test_ca) -> None:
    """TlsStream on both ends of a real TCP connection, every direction at once."""
    size = 8 << 20
    up, down = random.Random(5).randbytes(size), random.Random(6).randbytes(size)
    client_context = test_ca.client_context()
    server_context = test_ca.server_context("origin.test")

    async def exchange(tls: TlsStream, payload: bytes) -> str:
        async def send() -> None:
            for pos in range(0, size, 1 << 20):
                tls.write(payload[pos : pos + (1 << 20)])
                await tls.drain()

        async def receive() -> str:
            digest, got = hashlib.sha256(), 0
            while got < size:
                chunk = await tls.read(262144)
                assert chunk
                digest.update(chunk)
                got += len(chunk)
            return digest.hexdigest()

        _, received = await asyncio.gather(send(), receive())
        return received

    async def main() -> tuple[str, str]:
        at_server: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def serve(stream: SocketStream) -> None:
            tls = await tls_accept(stream, server_context, timeout=5)
            at_server.set_result(await exchange(tls, down))
            tls.close()
            await tls.wait_closed()

        async with stream_server(serve) as port:
            stream = await connect_tcp("127.0.0.1", port)
            tls = await tls_connect(stream, client_context, "origin.test", timeout=5)
            at_client = await exchange(tls, up)
            tls.close()
            await tls.wait_closed()
            return at_client, await at_server

    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        at_client, at_server = runner.run(main())
    assert at_client == hashlib.sha256(down).hexdigest()
    assert at_server == hashlib.sha256(up).hexdigest()


# --- every way a handshake fails, as a probe reports it -------------------------------------


def expired_certificate(ca: origins.TestCA, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for `name` that expired yesterday; returns (server, client) contexts."""
    cert, key = ca.issue(name, expired=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ca.client_context()


@pytest.fixture(scope="module")
def setups(test_ca, tmp_path_factory) -> dict[str, tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context) for each certificate situation."""
    stranger = origins.TestCA(tmp_path_factory.mktemp("stranger-ca"))
    return {
        "good": (test_ca.server_context("origin.test"), test_ca.client_context()),
        "other-name": (test_ca.server_context("other.test"), test_ca.client_context()),
        "unknown-ca": (stranger.server_context("origin.test"), test_ca.client_context()),
        "expired": expired_certificate(test_ca, "origin.test"),
    }


async def answer_tls(stream: SocketStream, context: ssl.SSLContext, seen: list[DialError]) -> None:
    try:
        tls = await tls_accept(stream, context, timeout=5)
    except DialError as exc:
        seen.append(exc)  # the client's alert, as the server's side of the handshake saw it
        return
    tls.close()


async def reset_after_hello(stream: SocketStream) -> None:
    await read_client_hello(stream)
    stream.abort()  # SO_LINGER 0: what a DPI box's RST looks like to the client


async def close_after_hello(stream: SocketStream) -> None:
    await read_client_hello(stream)
    stream.close()


async def silent_after_hello(stream: SocketStream) -> None:
    await read_client_hello(stream)
    try:
        await stream.read()  # until the client gives up
    except ConnectionError:
        pass  # it aborted: nothing to answer
    stream.close()


async def not_tls(stream: SocketStream) -> None:
    await read_client_hello(stream)
    stream.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.drain()
    stream.close()


@dataclass(frozen=True)
class Case:
    setup: str  # which certificates; for the raw servers only the client side matters
    server: str  # "tls" or the name of a raw server above
    failure: Failure
    detail: str
    server_saw: str = ""  # what the server's own handshake failed with (the client's alert)


RAW_SERVERS: dict[str, Handler] = {
    "reset": reset_after_hello,
    "close": close_after_hello,
    "silent": silent_after_hello,
    "not-tls": not_tls,
}
CASES = {
    "wrong-host-name": Case(
        "other-name", "tls", Failure.SSL_INVALID_HOSTNAME,
        "the server's certificate: Hostname mismatch, certificate is not valid for "
        "'origin.test'.",
        "alert bad certificate",
    ),
    "unknown-authority": Case(
        "unknown-ca", "tls", Failure.SSL_UNKNOWN_AUTHORITY,
        "the server's certificate: unable to get local issuer certificate",
        "alert unknown ca",
    ),
    "expired": Case(
        "expired", "tls", Failure.SSL_INVALID_CERTIFICATE,
        "the server's certificate: certificate has expired",
        "alert certificate expired",
    ),
    "reset-after-client-hello": Case(
        "good", "reset", Failure.CONNECTION_RESET,
        "the connection was reset during the TLS handshake",
    ),
    "closed-after-client-hello": Case(
        "good", "close", Failure.EOF,
        "the server closed the connection during the TLS handshake",
    ),
    "silent": Case("good", "silent", Failure.TIMEOUT, "no TLS handshake within 0.5s"),
    "not-tls": Case(
        "good", "not-tls", Failure.SSL_FAILED_HANDSHAKE,
        "TLS handshake failed: wrong version number",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_handshake_failures_are_classified(case: Case, setups) -> None:
    server_context, client_context = setups[case.setup]
    seen: list[DialError] = []
    if case.server == "tls":
        handler: Handler = lambda stream: answer_tls(stream, server_context, seen)  # noqa: E731
    else:
        handler = RAW_SERVERS[case.server]
    async with stream_server(handler) as port:
        stream = await connect_tcp("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DialError) as caught:
            await tls_connect(stream, client_context, "origin.test", timeout=0.5)
        assert loop.time() - started < 3
        assert caught.value.op is Op.TLS_HANDSHAKE
        assert caught.value.failure is case.failure
        assert caught.value.detail == case.detail
        assert stream.is_closing()
        if case.server_saw:
            for _ in range(100):  # the server learns of the alert a moment later
                if seen:
                    break
                await asyncio.sleep(0.01)
            [server_error] = seen
            assert case.server_saw in server_error.detail


async def test_the_good_setup_succeeds(setups) -> None:
    """The control for the table above: the same servers and clients, the right certificate."""
    server_context, client_context = setups["good"]
    async with stream_server(lambda stream: answer_tls(stream, server_context, [])) as port:
        stream = await connect_tcp("127.0.0.1", port)
        tls = await tls_connect(stream, client_context, "origin.test", timeout=5)
        tls.close()


# --- OpenSSL's own server: KeyUpdate and renegotiation --------------------------------------


@dataclass
class OpenSslServer:
    """`openssl s_server` for one connection. Lines written to its stdin are sent to the
    client, except commands: `K` sends a TLS 1.3 KeyUpdate asking for one back, `r` starts
    a TLS 1.2 renegotiation. With -msg it prints every handshake message it sends (>>>) and
    receives (<<<), and it prints the data it receives."""

    process: asyncio.subprocess.Process
    port: int
    output: bytearray = field(default_factory=bytearray)
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def wait_for(self, text: bytes, count: int = 1, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while self.output.count(text) < count:
                self.grew.clear()
                await self.grew.wait()


@pytest.fixture
async def s_server(test_ca) -> AsyncIterator[Callable[[str], Awaitable[OpenSslServer]]]:
    openssl = require_peer("openssl", "openssl")
    cert, key = test_ca.issue("origin.test")
    started: list[tuple[OpenSslServer, asyncio.Task[None]]] = []

    async def start(version_flag: str) -> OpenSslServer:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
            "-key", str(key), version_flag, "-naccept", "1", "-msg",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        server = OpenSslServer(process, port)

        async def collect() -> None:
            assert process.stdout is not None
            while chunk := await process.stdout.read(65536):
                server.output += chunk
                server.grew.set()

        started.append((server, asyncio.ensure_future(collect())))
        await server.wait_for(b"ACCEPT")
        return server

    yield start
    for server, collecting in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        await server.process.wait()
        await collecting


async def test_a_key_update_that_asks_for_one_back(s_server, test_ca) -> None:
    """TLS 1.3: the server updates its keys and asks us to update ours. Reading processes
    the KeyUpdate; OpenSSL sends our answer ahead of the next data we write (RFC 8446
    §4.6.3), and the server reads that data under the new keys."""
    server = await s_server("-tls1_3")
    stream = await connect_tcp("127.0.0.1", server.port)
    tls = await tls_connect(stream, test_ca.client_context(), "origin.test", timeout=5)
    await server.send("K")
    await server.wait_for(b">>> TLS 1.3, Handshake [length 0005], KeyUpdate")
    await server.send("after the update")
    assert await tls.readexactly(17) == b"after the update\n"
    tls.write(b"our reply\n")
    await tls.drain()
    await server.wait_for(b"our reply")
    answer = server.output.find(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
    assert 0 <= answer < server.output.find(b"our reply")
    tls.close()


class HoldRecords(WrappedStream):
    """Once armed, the next read waits until `count` whole TLS records have arrived and
    returns them together; reads after it wait for `then` when it is given. The test, not
    the scheduler, decides what each read brings."""

    def __init__(self, inner: Stream) -> None:
        super().__init__(inner)
        self.count = 0
        self.then: asyncio.Event | None = None

    def arm(self, count: int, then: asyncio.Event | None = None) -> None:
        self.count, self.then = count, then

    async def read(self, n: int = 65536) -> bytes:
        if not self.count:
            if self.then is not None:
                await self.then.wait()
            return await self.inner.read(n)
        held = bytearray()
        while whole_records(held) < self.count:
            chunk = await self.inner.read()
            if not chunk:
                break
            held += chunk
        self.count = 0
        self.inner.unread(bytes(held[n:]))
        return bytes(held[:n])


def whole_records(data: bytes) -> int:
    """How many whole TLS records `data` starts with."""
    count = pos = 0
    while pos + 5 <= len(data):
        pos += 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        if pos > len(data):
            break
        count += 1
    return count


async def test_a_renegotiation_while_writing(s_server, test_ca) -> None:
    """TLS 1.2: the server starts a renegotiation and sends data right behind its
    HelloRequest. The read that returns that data leaves the renegotiation half done, so
    the next write has to wait for the server's answer; with no other task reading, drain()
    reads it, and the write goes out once the new handshake completes."""
    server = await s_server("-tls1_2")
    held = HoldRecords(await connect_tcp("127.0.0.1", server.port))
    tls = await tls_connect(held, test_ca.client_context(), "origin.test", timeout=5)
    held.arm(2)  # the HelloRequest and the data, in one read
    await server.send("r")
    await server.wait_for(b"HelloRequest")
    await server.send("during")
    assert await tls.readexactly(7) == b"during\n"
    tls.write(b"held back\n")
    assert tls._backlog  # the path under test: OpenSSL could not take the write yet
    async with asyncio.timeout(5):
        await tls.drain()
    await server.wait_for(b"held back")
    assert server.output.count(b"ClientHello") == 2  # the first handshake, and the new one
    await server.send("after")
    assert await tls.readexactly(6) == b"after\n"
    tls.close()


async def test_a_renegotiation_while_a_reader_waits(s_server, test_ca) -> None:
    """The relay's case: a task is reading when the HelloRequest comes. A write made while
    the new handshake is under way waits in the backlog, and the reading task sends it as
    soon as the handshake completes."""
    server = await s_server("-tls1_2")
    held = HoldRecords(await connect_tcp("127.0.0.1", server.port))
    tls = await tls_connect(held, test_ca.client_context(), "origin.test", timeout=5)
    answer_arrives = asyncio.Event()
    held.arm(1, then=answer_arrives)  # the HelloRequest; the server's answer waits for us
    reading = asyncio.ensure_future(tls.read())
    await server.send("r")
    await server.wait_for(b"ClientHello", count=2)  # the reader answered the HelloRequest
    tls.write(b"during the handshake\n")
    assert tls._backlog and not reading.done()
    answer_arrives.set()
    await server.wait_for(b"during the handshake")
    assert not tls._backlog
    await server.send("bye")
    async with asyncio.timeout(5):
        assert await reading == b"bye\n"
    tls.close()
