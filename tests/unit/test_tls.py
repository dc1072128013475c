"""TLS over any Stream (transports/tls.py), both ends real OpenSSL, over the in-memory pipe
of tests/support/memory.py: handshakes in TLS 1.2 and 1.3, data both ways (8 MiB each way at
once), the ends of a stream (close_notify, an unclean EOF, write_eof), ALPN, what the first
flight looks like to the layer below, and the bad calls that must fail clearly."""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl

import pytest

from helper.proxy.relay import relay
from tests.support.memory import MemoryStream, memory_pipe
from tests.support.origins import TestCA
from tests.support.tls import read_records
from transports.base import DialError, Failure, Op
from transports.tls import TlsStream, TlsTruncationError, tls_accept, tls_connect
from transports.tlsfrag import Fragmenting, TlsFragStream

NAME = "server.test"
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
VERSIONS = [pytest.param(TLS12, id="tls1.2"), pytest.param(TLS13, id="tls1.3")]


@pytest.fixture(scope="module")
def certificate(test_ca: TestCA) -> tuple[str, str]:
    cert, key = test_ca.issue(NAME)
    return str(cert), str(key)


def contexts(
    test_ca: TestCA,
    certificate: tuple[str, str],
    version: ssl.TLSVersion | None = None,
    client_alpn: list[str] | None = None,
    server_alpn: list[str] | None = None,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    client = test_ca.client_context()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(*certificate)
    for context, alpn in ((client, client_alpn), (server, server_alpn)):
        if version is not None:
            context.minimum_version = context.maximum_version = version
        if alpn is not None:
            context.set_alpn_protocols(alpn)
    return client, server


async def handshake(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    *,
    record: bool = False,
    limit: int = 256 * 1024,
    suppress_ragged_eofs: bool = True,
) -> tuple[TlsStream, TlsStream, MemoryStream, MemoryStream]:
    a, b = memory_pipe(limit, record=record)
    client, server = await asyncio.gather(
        tls_connect(a, client_context, NAME, timeout=5, suppress_ragged_eofs=suppress_ragged_eofs),
        tls_accept(b, server_context, timeout=5),
    )
    return client, server, a, b


@pytest.fixture
def pair(test_ca, certificate):
    """Start a connected (client, server, client's inner, server's inner) for a version."""

    async def start(version: ssl.TLSVersion | None = None, **kwargs):
        return await handshake(*contexts(test_ca, certificate, version), **kwargs)

    return start


# --- handshake and data -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_handshake_and_data_both_ways(pair, version) -> None:
    client, server, a, _ = await pair(version)
    expected = "TLSv1.3" if version is TLS13 else "TLSv1.2"
    assert client.get_extra_info("version") == server.get_extra_info("version") == expected
    assert client.get_extra_info("cipher")[1] == expected
    assert client.get_extra_info("server_hostname") == NAME
    assert server.get_extra_info("server_hostname") is None
    assert dict(x[0] for x in client.get_extra_info("peercert")["subject"]) == {"commonName": NAME}
    client.write(b"ping")
    assert await server.read() == b"ping"
    server.write(b"pong")
    assert await client.read() == b"pong"
    client.close()
    server.close()


@pytest.mark.parametrize("version", VERSIONS)
async def test_eight_mib_each_way_at_once(pair, version) -> None:
    """One reader and one writer task on each end, all four at the same time: what the relay
    does. Writes of odd sizes, reads of another size; sha256 checked both ways."""
    client, server, _, _ = await pair(version)
    size = 8 << 20
    up = random.Random(1).randbytes(size)
    down = random.Random(2).randbytes(size)

    async def send(stream: TlsStream, data: bytes, seed: int) -> None:
        rng = random.Random(seed)
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 300_000)
            stream.write(data[pos : pos + step])
            await stream.drain()
            pos += step

    async def receive(stream: TlsStream) -> tuple[int, str]:
        digest, got = hashlib.sha256(), 0
        while got < size:
            chunk = await stream.read(100_003)
            assert chunk, f"end of stream after {got} bytes"
            digest.update(chunk)
            got += len(chunk)
        return got, digest.hexdigest()

    *_, at_client, at_server = await asyncio.gather(
        send(client, up, 3), send(server, down, 4), receive(client), receive(server)
    )
    assert at_client == (size, hashlib.sha256(down).hexdigest())
    assert at_server == (size, hashlib.sha256(up).hexdigest())
    client.close()
    server.close()


async def test_reads_return_at_most_n_and_unread_comes_back_first(pair) -> None:
    client, server, _, _ = await pair()
    server.write(b"0123456789")
    assert await client.read(4) == b"0123"
    client.unread(b"ab")
    assert await client.read(3) == b"ab"  # what was put back, alone
    assert await client.readexactly(6) == b"456789"
    client.close()
    server.close()


async def test_a_cancelled_read_loses_nothing(pair) -> None:
    """The relay cancels its copy tasks; a read cancelled while it waits must leave every
    byte for the next read."""
    client, server, _, _ = await pair()
    waiting = asyncio.ensure_future(client.read())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    server.write(b"still here")
    assert await client.read() == b"still here"
    client.close()
    server.close()


async def test_tls_inside_tls(test_ca, certificate) -> None:
    """The fronted transport's shape: an end-to-end TLS connection inside another one. The
    outer one is TLS 1.2 (no half-close), so the inner one's write_eof is its close_notify
    alone."""
    outer_client, outer_server, _, _ = await handshake(*contexts(test_ca, certificate, TLS12))
    client_context, server_context = contexts(test_ca, certificate, TLS13)
    client, server = await asyncio.gather(
        tls_connect(outer_client, client_context, NAME, timeout=5),
        tls_accept(outer_server, server_context, timeout=5),
    )
    assert client.get_extra_info("version") == "TLSv1.3"
    assert client.inner.get_extra_info("version") == "TLSv1.2"
    client.write(b"x" * 200_000)
    client.write_eof()
    assert await server.readexactly(200_000) == b"x" * 200_000
    assert await server.read() == b""
    server.write(b"answer")
    assert await client.read() == b"answer"
    server.close()
    assert await client.read() == b""
    assert await outer_client.read() == b""  # the outer connection ended cleanly too
    client.close()


# --- what the layer below sees ------------------------------------------------------------


async def test_the_client_hello_is_one_write(test_ca, certificate) -> None:
    client, server, a, _ = await handshake(*contexts(test_ca, certificate), record=True)
    assert a.writes is not None
    [hello] = read_records(a.writes[0])  # one whole record, nothing else, in the first write
    content_type, _, fragment = hello
    assert content_type == 0x16 and fragment[0] == 0x01  # handshake: ClientHello
    assert NAME.encode() in fragment
    client.close()
    server.close()


async def test_handshake_through_tlsfrag(test_ca, certificate) -> None:
    """`tlsfrag` holds bytes until the first record is complete: it gets it in one write and
    cuts it inside the server name; the server's TLS reassembles it."""
    a, b = memory_pipe(record=True)
    client_context, server_context = contexts(test_ca, certificate)
    client, server = await asyncio.gather(
        tls_connect(TlsFragStream(a, Fragmenting(sni=True)), client_context, NAME, timeout=5),
        tls_accept(b, server_context, timeout=5),
    )
    assert a.writes is not None
    first, second = read_records(a.writes[0])
    assert NAME.encode() not in first[2] and NAME.encode() not in second[2]
    assert NAME.encode() in first[2] + second[2]
    client.write(b"through")
    assert await server.read() == b"through"
    client.close()
    server.close()


# --- ends of stream -----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_close_notify_ends_the_stream(pair, version) -> None:
    client, server, a, _ = await pair(version)
    server.write(b"last words")
    server.close()
    assert await client.read() == b"last words"
    assert await client.read() == b""
    assert await client.read() == b""  # and stays ended
    assert client.get_extra_info("unclean_eof") is False
    client.close()
    assert a.closed


async def test_an_unclean_eof_ends_the_stream_and_is_recorded(pair) -> None:
    """A server that closes TCP after its response, without close_notify."""
    client, server, _, b = await pair()
    server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    b.close()  # TCP FIN, no close_notify
    assert await client.readuntil(b"\r\n\r\n", 1000)
    assert await client.read() == b"ok"
    assert await client.read() == b""
    assert client.get_extra_info("unclean_eof") is True
    client.close()


async def test_an_unclean_eof_raises_when_asked(pair) -> None:
    client, server, _, b = await pair(suppress_ragged_eofs=False)
    server.write(b"partial")
    b.close()
    assert await client.read() == b"partial"
    with pytest.raises(TlsTruncationError, match="without close_notify"):
        await client.read()
    with pytest.raises(ConnectionResetError):  # what the relay treats as a cut
        await client.read()
    client.close()


async def test_a_cut_in_the_middle_of_a_record(pair) -> None:
    client, server, _, b = await pair()
    server.write(b"x" * 1000)
    del b.peer.buffer[-100:]  # the record's last 100 bytes never arrive
    b.close()
    assert await client.read() == b""
    assert client.get_extra_info("unclean_eof") is True
    client.close()


async def test_half_close_in_tls13(pair) -> None:
    """The client ends its side; the server reads to the end and still answers."""
    client, server, a, _ = await pair(TLS13)
    assert client.can_write_eof()
    client.write(b"request")
    client.write_eof()
    assert a.eof_written  # close_notify, then the inner stream's own end
    assert await server.read() == b"request"
    assert await server.read() == b""
    server.write(b"r" * 300_000)
    server.close()
    assert await client.readexactly(300_000) == b"r" * 300_000
    assert await client.read() == b""
    assert client.get_extra_info("unclean_eof") is False
    client.close()


async def test_write_eof_with_records_waiting_to_be_read(pair) -> None:
    """Records already received but not yet read must survive write_eof (the ssl module's
    unwrap() would otherwise read them as 'application data after close notify')."""
    client, server, _, _ = await pair(TLS13)
    server.write(b"a" * 100)
    server.write(b"b" * 100)
    assert await client.read(10) == b"a" * 10
    client.write_eof()
    assert await client.readexactly(190) == b"a" * 90 + b"b" * 100
    server.write(b"more")
    assert await client.read() == b"more"
    client.close()
    server.close()


async def test_no_half_close_in_tls12(pair) -> None:
    """TLS 1.2 peers must answer close_notify by closing, so the stream does not offer
    half-close; write_eof still tells the peer that nothing more comes."""
    client, server, _, _ = await pair(TLS12)
    assert not client.can_write_eof()
    client.write_eof()
    assert await server.read() == b""
    client.close()
    server.close()


async def test_write_after_write_eof_is_an_error(pair) -> None:
    client, server, _, _ = await pair(TLS13)
    client.write_eof()
    with pytest.raises(RuntimeError, match="after write_eof"):
        client.write(b"late")
    client.close()
    with pytest.raises(ConnectionResetError, match="closed"):
        client.write(b"later")
    server.close()


async def test_close_sends_close_notify_and_closes_the_inner_stream(pair) -> None:
    client, server, a, _ = await pair()
    client.close()
    assert a.closed and client.is_closing()
    assert await server.read() == b""
    assert server.get_extra_info("unclean_eof") is False
    client.close()  # twice is fine
    server.close()


async def test_abort_resets_the_inner_stream(pair) -> None:
    client, server, a, _ = await pair()
    client.abort()
    assert a.closed
    with pytest.raises(ConnectionResetError):
        await server.read()
    server.close()


async def test_a_reset_after_the_handshake_is_a_read_error(pair) -> None:
    client, server, _, b = await pair()
    b.abort()
    with pytest.raises(ConnectionResetError):
        await client.read()
    client.close()
    server.close()


async def test_the_relay_pumps_a_tls_stream_and_passes_half_close_on(pair) -> None:
    """detour's relay between a plain client and a TLS 1.3 stream: the client's end of
    request becomes close_notify, the server still answers in full, and its close_notify
    becomes the client's end of stream."""
    app, accepted = memory_pipe()
    client, server, _, _ = await pair(TLS13)
    relaying = asyncio.ensure_future(relay(accepted, client))
    app.write(b"request")
    app.write_eof()
    request = bytearray()
    while chunk := await server.read():
        request += chunk
    assert request == b"request"
    server.write(b"a" * 100_000)
    server.close()
    assert await app.readexactly(100_000) == b"a" * 100_000
    assert await app.read() == b""
    stats = await relaying
    assert (stats.up, stats.down, stats.reset) == (7, 100_000, False)


# --- ALPN and extra info ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_alpn", "server_alpn", "expected"),
    [
        pytest.param(["h2", "http/1.1"], ["http/1.1"], "http/1.1", id="agreed"),
        pytest.param(["h2", "http/1.1"], ["h2", "http/1.1"], "h2", id="server-order"),
        pytest.param(None, ["h2"], None, id="client-offers-none"),
        pytest.param(["h2"], None, None, id="server-ignores"),
        pytest.param(["h2"], ["http/1.1"], None, id="no-overlap"),
    ],
)
async def test_alpn(test_ca, certificate, client_alpn, server_alpn, expected) -> None:
    client, server, _, _ = await handshake(
        *contexts(test_ca, certificate, None, client_alpn, server_alpn)
    )
    assert client.get_extra_info("alpn_protocol") == expected
    assert server.get_extra_info("alpn_protocol") == expected
    client.close()
    server.close()


async def test_extra_info_falls_back_to_the_inner_stream(pair) -> None:
    client, server, _, _ = await pair()
    assert isinstance(client.get_extra_info("ssl_object"), ssl.SSLObject)
    assert isinstance(client.get_extra_info("sslcontext"), ssl.SSLContext)
    assert client.get_extra_info("peername") == "server"  # the memory pipe's answer
    assert client.get_extra_info("no such thing", 42) == 42
    assert client.raw_socket_stream() is None  # bytes are transformed in Python
    client.close()
    server.close()


# --- failures -----------------------------------------------------------------------------


async def test_a_failed_handshake_closes_the_inner_stream(test_ca, certificate) -> None:
    client_context, _ = contexts(test_ca, certificate)
    a, b = memory_pipe()
    b.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(DialError) as caught:
        await tls_connect(a, client_context, NAME, timeout=5)
    assert (caught.value.failure, caught.value.op) == (
        Failure.SSL_FAILED_HANDSHAKE,
        Op.TLS_HANDSHAKE,
    )
    assert caught.value.detail == "TLS handshake failed: wrong version number"
    assert a.closed


async def test_the_server_side_classifies_too(test_ca, certificate) -> None:
    _, server_context = contexts(test_ca, certificate)
    a, b = memory_pipe()
    a.write(b"GET / HTTP/1.1\r\nHost: server.test\r\n\r\n")
    with pytest.raises(DialError) as caught:
        await tls_accept(b, server_context, timeout=5)
    assert (caught.value.failure, caught.value.op) == (
        Failure.SSL_FAILED_HANDSHAKE,
        Op.TLS_HANDSHAKE,
    )
    assert b.closed

    a, b = memory_pipe()
    a.close()
    with pytest.raises(DialError) as caught:
        await tls_accept(b, server_context, timeout=5)
    assert caught.value.failure is Failure.EOF
    assert caught.value.detail == "the client closed the connection during the TLS handshake"


async def test_the_timeout_covers_the_whole_handshake(test_ca, certificate) -> None:
    """A server that answers its first flight and then goes silent."""
    client_context, server_context = contexts(test_ca, certificate, TLS12)
    a, b = memory_pipe()

    async def stall_after_server_hello() -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server_context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(await b.read())
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        b.write(outgoing.read())  # ServerHello ... ServerHelloDone; then nothing more

    stalling = asyncio.ensure_future(stall_after_server_hello())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DialError) as caught:
        await tls_connect(a, client_context, NAME, timeout=0.3)
    assert loop.time() - started < 2
    assert caught.value.failure is Failure.TIMEOUT
    assert caught.value.detail == "no TLS handshake within 0.3s"
    assert a.closed
    await stalling


async def test_a_cancelled_handshake_aborts_the_inner_stream(test_ca, certificate) -> None:
    client_context, _ = contexts(test_ca, certificate)
    a, _b = memory_pipe()
    connecting = asyncio.ensure_future(tls_connect(a, client_context, NAME))
    await asyncio.sleep(0.01)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    assert a.closed


@pytest.mark.parametrize(
    ("server_hostname", "check_hostname", "message"),
    [
        pytest.param("", True, "empty string", id="empty-name"),
        pytest.param(".server.test", True, "label empty", id="leading-dot"),
        pytest.param("a" * 64 + ".test", True, "label", id="label-too-long"),
        pytest.param(None, True, "check_hostname requires server_hostname", id="no-name"),
    ],
)
async def test_a_name_tls_cannot_use_is_a_value_error(
    test_ca, certificate, server_hostname, check_hostname, message
) -> None:
    client_context, _ = contexts(test_ca, certificate)
    client_context.check_hostname = check_hostname
    a, _b = memory_pipe()
    with pytest.raises(ValueError, match=message):
        await tls_connect(a, client_context, server_hostname)
    assert a.closed


async def test_contexts_for_the_wrong_side_are_refused(test_ca, certificate) -> None:
    client_context, server_context = contexts(test_ca, certificate)
    a, _b = memory_pipe()
    with pytest.raises(ValueError, match="a server context cannot be used here"):
        await tls_connect(a, server_context, NAME)
    assert a.closed
    a, _b = memory_pipe()
    with pytest.raises(ValueError, match="a client context cannot be used here"):
        await tls_accept(a, client_context)
    assert a.closed


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
async def test_the_timeout_must_be_positive(test_ca, certificate, timeout) -> None:
    client_context, _ = contexts(test_ca, certificate)
    a, _b = memory_pipe()
    with pytest.raises(ValueError, match="must be positive"):
        await tls_connect(a, client_context, NAME, timeout=timeout)
    assert a.closed


async def test_read_size_must_be_positive(pair) -> None:
    client, server, _, _ = await pair()
    with pytest.raises(ValueError, match="must be positive"):
        await client.read(0)
    client.close()
    server.close()
