"""Property tests for what an `mtproxy:` route reads from untrusted places: the MTProto
proxy's first flight (fake TLS), the padded packets it sends back (re-framed and unpadded
for the client), whatever else it sends once the connection is up, and the links people
paste. Each property draws one st.binary() and decodes it.

For every example: a result or the parser's own error, never anything else; a stream read in
pieces reads the same as whole; the secret never appears in an error."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import Choices
from tests.support.seeded import seeded_urandom
from tests.unit.test_mtproxy import Pipe
from transports import Endpoint
from transports.links import LinkError, recognise_link
from transports.mtproto import faketls
from transports.mtproto.client import Reframer, client_hello, server_flight
from transports.mtproto.dcs import DataCentre
from transports.mtproto.framing import FramingError, PacketReader, encode_packet
from transports.mtproto.obfuscated2 import Keystream, Tag, initiate
from transports.mtproto.pipe import Ciphers, PipedSocket
from transports.mtproto.secret import parse_secret
from transports.mtproxy import MTProxyStream

KEY = bytes(range(16))
NOW = 1_765_000_000
HELLO = client_hello(KEY, "www.example.org", now=NOW, urandom=lambda n: bytes(n), key_share=KEY * 2)
FLIGHT = faketls.server_hello(
    KEY,
    faketls.check_client_hello(HELLO, KEY, now=NOW, skew=1),
    urandom=lambda n: bytes(n),
    key_share=KEY * 2,
)
DD = "dd" + KEY.hex()
# A new stream's ciphers per example (AES key schedules): a tenth of the examples.
CRYPTO = settings(max_examples=max(20, settings().max_examples // 10))


def any_first_flight_is_read_refused_or_awaited(raw: bytes) -> None:
    c = Choices(raw)
    # Half the examples start from the real flight, cut and changed where the bytes say.
    if c.byte() & 1:
        cut = c.byte() * len(FLIGHT) // 255
        data = bytearray(FLIGHT[:cut] + raw[2:])
        if data and c.byte() & 1:
            data[c.byte() * len(data) // 256] ^= c.byte() | 1
    else:
        data = bytearray(raw[1:])
    try:
        size = server_flight(KEY, HELLO, data)
    except faketls.HelloError as exc:
        message = str(exc)
        assert message and KEY.hex() not in message
        return
    assert size is None or (size == len(FLIGHT) and bytes(data[:size]) == FLIGHT)


def any_bytes_from_the_proxy_reframe_or_raise(raw: bytes) -> None:
    c = Choices(raw)
    target = (Tag.ABRIDGED, Tag.INTERMEDIATE)[c.byte() & 1]
    cuts = sorted({c.byte() * len(raw) // 255 for _ in range(3)})
    whole, pieces = Reframer(Tag.PADDED, target), Reframer(Tag.PADDED, target)
    try:
        out = whole.feed(raw)
    except FramingError:
        return
    bounds = zip([0, *cuts], [*cuts, len(raw)], strict=True)
    joined = b"".join(pieces.feed(raw[a:b]) for a, b in bounds)
    assert joined == out and whole.pending == pieces.pending
    PacketReader(target).feed(out)  # the client reads whole packets of its own framing


def valid_padded_packets_reach_the_client_without_their_padding(raw: bytes) -> None:
    c = Choices(raw)
    messages = []
    for _ in range(1 + c.byte() % 4):
        words = 1 + c.byte() % 8
        messages.append(b"\x01" * 8 + bytes(16) + bytes(16 * words))
    stream = b"".join(
        encode_packet(Tag.PADDED, m, urandom=lambda n, c=c: bytes(c.byte() for _ in range(n)))
        for m in messages
    )
    out = Reframer(Tag.PADDED, Tag.INTERMEDIATE).feed(stream)
    assert PacketReader(Tag.INTERMEDIATE).feed(out) == messages


def _stream() -> MTProxyStream:
    stream = MTProxyStream(Pipe(), DataCentre(2), Endpoint("192.0.2.9", 443), parse_secret(DD))
    init, _ = initiate(Tag.ABRIDGED, 2, urandom=seeded_urandom(b"mtproxy"))
    stream.write(init)
    return stream


@CRYPTO
@given(st.binary(max_size=300))
def test_anything_the_proxy_sends_is_converted_or_resets(raw: bytes) -> None:
    stream = _stream()
    try:
        data = stream._convert(raw)
    except ConnectionResetError as exc:
        message = str(exc)
        assert "MTProto proxy 192.0.2.9:443" in message and KEY.hex() not in message
        return
    assert isinstance(data, bytes)


class _Transport:
    def __init__(self) -> None:
        self.protocol = None
        self.aborted = False

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name, default=None):
        return default

    def abort(self) -> None:
        self.aborted = True


class _Socket:
    def __init__(self) -> None:
        self.transport = _Transport()

    def detach(self):
        return self.transport, b"", None


class _Relay(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(1024))
        self.got = bytearray()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buffer[:nbytes]


def the_fast_path_reads_any_records_as_the_stream_does(raw: bytes) -> None:
    c = Choices(raw)
    data = raw[1:]
    if c.byte() & 1:  # half the examples: records around the bytes
        data = faketls.wrap_records(data[:200]) + data[200:]
    cuts = sorted({c.byte() * len(data) // 255 for _ in range(3)})
    socket, relay = _Socket(), _Relay()
    key_iv = (KEY * 2, KEY)
    ciphers = Ciphers(None, Keystream(*key_iv), Keystream(*key_iv), None, faketls.RecordSplitter())
    transport, _, _ = PipedSocket(socket, ciphers, lambda held: held).detach()
    transport.set_protocol(relay)
    protocol = socket.transport.protocol
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        buffer = protocol.get_buffer(-1)
        buffer[: b - a] = data[a:b]
        protocol.buffer_updated(b - a)
    try:
        expected = faketls.RecordReader().feed(data)
    except faketls.RecordError:
        assert socket.transport.aborted
        return
    assert not socket.transport.aborted
    assert bytes(relay.got) == Keystream(*key_iv).apply(expected)


def any_proxy_link_is_a_route_or_one_line(raw: bytes) -> None:
    text = raw.decode("utf-8", "replace")
    for link in (f"tg://proxy?{text}", f"tg://proxy?server=h.example&port=443&secret={DD}{text}"):
        try:
            found = recognise_link(link)
        except LinkError as exc:
            message = str(exc)
            assert "\n" not in message and KEY.hex() not in message
            continue
        assert found.kind == "mtproxy" and KEY.hex() not in found.shown


def test_the_fixtures_are_what_they_say() -> None:
    assert server_flight(KEY, HELLO, FLIGHT) == len(FLIGHT)
    assert struct.unpack(">H", HELLO[3:5]) == (512,)


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    raw=st.binary(max_size=300),
    raw_1=st.binary(max_size=400),
    raw_2=st.binary(max_size=400),
    raw_3=st.binary(max_size=120),
    raw_4=st.binary(max_size=400),
)
def test_first_flights_frames_and_links(raw, raw_1, raw_2, raw_3, raw_4) -> None:
    any_first_flight_is_read_refused_or_awaited(raw)
    any_bytes_from_the_proxy_reframe_or_raise(raw_1)
    valid_padded_packets_reach_the_client_without_their_padding(raw_2)
    any_proxy_link_is_a_route_or_one_line(raw_3)
    the_fast_path_reads_any_records_as_the_stream_does(raw_4)
