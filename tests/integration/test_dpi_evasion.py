"""`tlsfrag` and `split` on real sockets: a real TLS handshake (Python's ssl, the test CA)
through a `tlsfrag:sni` chain, with a recording relay in front of the server showing the
records on the wire; TCP segments counted by the kernel (TCP_INFO); curl through detour's
listener with a `tlsfrag:sni` route. `disorder` and `oob` on loopback sockets: the server
reads the whole hello (what they do to packets is tests/lab/test_evasion.py's subject)."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys

import pytest

from tests.conftest import config_text
from tests.support import origins
from tests.support.peers import require_peer
from tests.support.tls import read_records
from transports import DialOptions, Stream, parse_chain
from transports.base import Endpoint
from transports.resolver import StaticResolver

HOSTS = StaticResolver({"origin.test": ["127.0.0.1"]})
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO is Linux's")


@pytest.fixture
async def recorder(https_origin):
    """A recording relay in front of the HTTPS origin, in this test's loop."""
    origin = await origins.start_recorder(https_origin.address)
    yield origin
    await origins.stop(origin)


async def tls_get(stream: Stream, context: ssl.SSLContext, path: str) -> bytes:
    """An HTTPS request over a detour Stream with Python's ssl (memory BIOs): the handshake
    and the request go through whatever the Stream does to the bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="origin.test")

    async def flush_and_read() -> None:
        if outgoing.pending:
            stream.write(outgoing.read())
            await stream.drain()
        data = await stream.read()
        if not data:
            incoming.write_eof()
        incoming.write(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await flush_and_read()
    tls.write(f"GET {path} HTTP/1.0\r\nHost: origin.test\r\n\r\n".encode())
    response = bytearray()
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            await flush_and_read()
            continue
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        response += chunk
    return bytes(response)


def data_segments_sent(stream: Stream) -> int:
    """tcpi_data_segs_out from struct tcp_info (Linux 4.6+): data segments this socket sent."""
    info = stream.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("I", info, 156)[0]


async def test_real_tls_handshake_through_tlsfrag(recorder, test_ca) -> None:
    dialer = parse_chain("tlsfrag:sni").build(DialOptions(resolver=HOSTS))
    stream = await dialer.dial(Endpoint("origin.test", recorder.port))
    assert stream.raw_socket_stream() is None  # the ClientHello has not gone out yet
    response = await tls_get(stream, test_ca.client_context(), "/through-tlsfrag")
    assert response.endswith(b"hello from origin origin.test/through-tlsfrag\n")
    # Pure pass-through after the ClientHello: the relay may take its fast path.
    assert stream.raw_socket_stream() is not None
    stream.close()

    [wire] = recorder.server.received
    first, second = _first_records(wire, 2)
    assert first[0] == second[0] == 0x16  # both handshake records
    hello = first[2] + second[2]
    assert hello[0] == 0x01 and int.from_bytes(hello[1:4], "big") == len(hello) - 4
    assert b"origin.test" in hello  # reassembled, the name is there ...
    assert b"origin.test" not in first[2] and b"origin.test" not in second[2]  # ... split


def _first_records(wire: bytes, n: int) -> list[tuple[int, bytes, bytes]]:
    """The first n TLS records of a client's byte stream (the rest is encrypted traffic)."""
    records, pos = [], 0
    for _ in range(n):
        size = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        records += read_records(wire[pos : pos + 5 + size])
        pos += 5 + size
    return records


@linux_only
async def test_segments_option_puts_each_record_in_its_own_segment(recorder, test_ca) -> None:
    dialer = parse_chain("tlsfrag:1,sni,segments").build(DialOptions(resolver=HOSTS))
    stream = await dialer.dial(Endpoint("origin.test", recorder.port))
    before = data_segments_sent(stream)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = test_ca.client_context().wrap_bio(incoming, outgoing, server_hostname="origin.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    stream.write(outgoing.read())  # the ClientHello, as one write
    assert data_segments_sent(stream) - before == 3  # three records, three segments
    stream.abort()


@linux_only
async def test_split_sends_separate_segments(echo_origin) -> None:
    dialer = parse_chain("split:1,5").build()
    stream = await dialer.dial(Endpoint(*echo_origin.address))
    before = data_segments_sent(stream)
    stream.write(b"0123456789")
    assert data_segments_sent(stream) - before == 3  # 0 | 1234 | 56789
    assert stream.raw_socket_stream() is not None
    assert await stream.readexactly(10) == b"0123456789"
    stream.close()


@linux_only
async def test_without_segments_the_records_share_one_segment(recorder, test_ca) -> None:
    """The plain `tlsfrag` defeats a DPI that reads only the first record; the records still
    travel in one segment (a control for the test above)."""
    dialer = parse_chain("tlsfrag:1,sni").build(DialOptions(resolver=HOSTS))
    stream = await dialer.dial(Endpoint("origin.test", recorder.port))
    before = data_segments_sent(stream)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = test_ca.client_context().wrap_bio(incoming, outgoing, server_hostname="origin.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    stream.write(outgoing.read())
    assert data_segments_sent(stream) - before == 1
    stream.abort()


@pytest.fixture
def background_recorder(background, https_origin):
    origin = background.run(origins.start_recorder(https_origin.address))
    yield origin
    background.run(origins.stop(origin))


@pytest.mark.parametrize("chain", ["tlsfrag:sni", "split:7 | tlsfrag:sni,segments"])
def test_curl_through_a_tlsfrag_route(detour_process, background_recorder, test_ca, chain) -> None:
    detour = detour_process(config_text(routes={"fragmented": chain}))
    host, port = detour.address
    curl = require_peer("curl", "curl")
    result = subprocess.run(
        [
            curl, "--silent", "--show-error", "--max-time", "10",
            "--socks5-hostname", f"{host}:{port}", "--cacert", str(test_ca.ca_path),
            f"https://origin.test:{background_recorder.port}/curl",
        ],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hello from origin origin.test:{background_recorder.port}/curl\n"
    [wire] = background_recorder.server.received
    first, second = _first_records(wire, 2)
    assert b"origin.test" not in first[2] and b"origin.test" not in second[2]
    assert b"origin.test" in first[2] + second[2]


@linux_only
@pytest.mark.parametrize("chain", ["disorder:sni", "oob:sni", "disorder:3 | tlsfrag:sni"])
async def test_packet_tricks_leave_the_bytes_whole(recorder, test_ca, chain) -> None:
    """On loopback no packet crosses a hop (a TTL of 1 still arrives), so `disorder` shows
    here only as a cut; `oob`'s urgent byte is taken out by the server's TCP: the server
    reads exactly the hello the client wrote, and the handshake and request go through."""
    dialer = parse_chain(chain).build(DialOptions(resolver=HOSTS))
    stream = await dialer.dial(Endpoint("origin.test", recorder.port))
    response = await tls_get(stream, test_ca.client_context(), "/tricks")
    assert response.endswith(b"hello from origin origin.test/tricks\n")
    assert data_segments_sent(stream) >= 3  # the hello in two segments, then the request
    assert stream.get_extra_info("socket").getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64
    stream.close()
    [wire] = recorder.server.received
    hello = b""
    for records in range(1, 4):  # the hello, from however many records carry it
        hello = b"".join(r[2] for r in _first_records(wire, records))
        if len(hello) >= 4 + int.from_bytes(hello[1:4], "big"):
            break
    assert hello[0] == 0x01 and len(hello) == 4 + int.from_bytes(hello[1:4], "big")
    assert b"origin.test" in hello  # whole: no urgent byte in it, nothing lost
