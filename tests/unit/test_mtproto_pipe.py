"""The relay's fast path for an `mtproxy:` stream (transports/mtproto/pipe.py) without
sockets: when the stream offers it, and that what goes through its transport and protocol
both ways is what the stream's own read and write make of the same bytes (the proxy's
records split anywhere), with the failures reset as the stream's are."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import pytest

from tests.unit.test_mtproxy import DD, EE, PLAIN, Pipe, open_stream, proxy_side
from transports.mtproto import faketls
from transports.mtproto.framing import PacketReader, encode_packet
from transports.mtproto.obfuscated2 import Tag, initiate
from transports.mtproto.pipe import PipedSocket
from transports.mtproxy import MTProxyStream

CHUNK = 256 * 1024


class FakeTransport:
    """What the fast path writes to the proxy, and whether it was reset."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.views: list[memoryview] = []
        self.protocol: Any = None
        self.aborted = False
        self.holds = 0  # what get_write_buffer_size says: the transport keeps the views

    def write(self, data: Any) -> None:
        self.written += data
        self.views.append(memoryview(data))

    def writelines(self, pieces: list[Any]) -> None:
        for piece in pieces:
            self.write(piece)

    def get_write_buffer_size(self) -> int:
        return self.holds

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        self.aborted = True


class FastPipe(Pipe):
    """The proxy's end as a plain socket would be: offered to the relay, detachable with
    the bytes it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.transport = FakeTransport()
        self.held = b""

    def raw_socket_stream(self) -> Any:
        return self

    def detach(self) -> tuple[Any, bytes, Any]:
        return self.transport, self.held, "state"


class Relay(asyncio.BufferedProtocol):
    """The relay's leg for the proxy's side: its buffer, what it was handed, its ends."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(CHUNK))
        self.got = bytearray()
        self.eof = self.lost = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buffer[:nbytes]

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def started(secret: str, tag: Tag = Tag.INTERMEDIATE, *, clear: bool = False):
    """A stream whose client sent its init and one packet and whose proxy answered once:
    (stream, its pipe, the client's ciphers or None, the proxy's ciphers, the framing)."""
    stream, plain_pipe = await open_stream(secret)
    pipe = FastPipe()
    pipe.written, pipe.incoming, pipe.on_write = plain_pipe.written, plain_pipe.incoming, None
    stream.inner = pipe
    first = encode_packet(tag, os.urandom(40))
    if clear:
        client = None
        stream.write(tag.value + first)
    else:
        init, client = initiate(tag, 2)
        stream.write(init + client.encrypt(first))
    assert isinstance(stream.raw_socket_stream(), PipedSocket)  # the init is out
    _, _, _, ob = proxy_side(pipe, secret)
    answer = encode_packet(tag, os.urandom(40))
    down = ob.encrypt(answer)  # type: ignore[attr-defined]
    pipe.incoming.put_nowait(faketls.wrap_records(down) if secret.startswith("ee") else down)
    got = await stream.read()
    assert (client.decrypt(got) if client else got) == answer
    return stream, pipe, client, ob


def from_far(secret: str, ob: Any, plain: bytes) -> bytes:
    data = ob.encrypt(plain)
    return faketls.wrap_records(data) if secret.startswith("ee") else data


def deliver(protocol: Any, data: bytes, rng: random.Random) -> None:
    """`data` through the protocol in reads of random sizes, as a transport would."""
    pos = 0
    while pos < len(data):
        buffer = protocol.get_buffer(-1)
        n = min(len(buffer), len(data) - pos, rng.choice((1, 5, 700, 16389, 1 << 20)))
        buffer[:n] = data[pos : pos + n]
        protocol.buffer_updated(n)
        pos += n


@pytest.mark.parametrize(
    ("secret", "tag", "clear"),
    [
        (PLAIN, Tag.INTERMEDIATE, False),
        (PLAIN, Tag.ABRIDGED, False),
        (DD, Tag.PADDED, False),
        (DD, Tag.PADDED, True),
        (EE, Tag.PADDED, False),
    ],
    ids=["plain", "plain-abridged", "dd", "dd-clear", "ee"],
)
async def test_the_fast_path_converts_both_ways_as_the_stream_does(
    secret: str, tag: Tag, clear: bool
) -> None:
    stream, pipe, client, ob = await started(secret, tag, clear=clear)
    # Bytes of the proxy's that arrived before the hand-over go to the client first.
    early = os.urandom(3000)
    pipe.held = from_far(secret, ob, early)
    piped = stream.raw_socket_stream()
    assert isinstance(piped, PipedSocket)
    transport, pending, state = piped.detach()
    assert state == "state"
    assert (client.decrypt(pending) if client else pending) == early
    relay = Relay()
    transport.set_protocol(relay)
    protocol = pipe.transport.protocol
    rng = random.Random(7)
    # Down: the proxy's bytes, in reads of any size (records split anywhere).
    down = os.urandom(600_000)
    deliver(protocol, from_far(secret, ob, down), rng)
    assert (client.decrypt(bytes(relay.got)) if client else bytes(relay.got)) == down
    # Up: the client's bytes, as the relay writes them; the proxy reads them as sent.
    up = os.urandom(300_000)
    sent = client.encrypt(up) if client else up
    for start in range(0, len(sent), 100_000):
        transport.write(sent[start : start + 100_000])
    assert transport.get_write_buffer_size() == 0  # the relay's buffer is never held
    wire = bytes(pipe.transport.written)
    if secret.startswith("ee"):
        wire = faketls.RecordReader().feed(wire)
    assert ob.decrypt(wire) == up  # type: ignore[attr-defined]
    # The proxy's end of stream reaches the relay.
    assert protocol.eof_received() is True and relay.eof


async def test_no_fast_path_while_packets_are_re_framed() -> None:
    stream, pipe = await open_stream(DD)
    stream.inner = fast = FastPipe()
    fast.written = pipe.written
    stream.write(b"\xef" + encode_packet(Tag.ABRIDGED, os.urandom(40)))
    _, tag, _, ob = proxy_side(fast, DD)
    fast.incoming.put_nowait(ob.encrypt(encode_packet(Tag.PADDED, os.urandom(40))))  # type: ignore[attr-defined]
    assert PacketReader(Tag.ABRIDGED).feed(await stream.read())
    assert stream.raw_socket_stream() is None  # abridged to padded: packets re-framed


async def test_a_held_write_gets_a_buffer_of_its_own() -> None:
    stream, pipe, client, ob = await started(PLAIN)
    transport, _, _ = stream.raw_socket_stream().detach()  # type: ignore[union-attr]
    pipe.transport.holds = 1  # the socket is full: the transport keeps what it was given
    first, second = os.urandom(1000), os.urandom(1000)
    transport.write(client.encrypt(first))
    transport.write(client.encrypt(second))
    held = [bytes(view) for view in pipe.transport.views]
    assert ob.decrypt(held[0] + held[1]) == first + second  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "said"),
    [(b"\x15\x03\x03\x00\x02\x02\x28", "a record of type 21"), (b"\x17\x03\x03\x00\x10ab", "")],
)
async def test_what_no_ee_proxy_sends_resets_the_fast_path(
    raw: bytes, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="detour")
    stream, pipe, _, _ = await started(EE, Tag.PADDED)
    transport, _, _ = stream.raw_socket_stream().detach()  # type: ignore[union-attr]
    relay = Relay()
    transport.set_protocol(relay)
    protocol = pipe.transport.protocol
    deliver(protocol, raw, random.Random(1))
    if said:  # a record no proxy sends
        assert pipe.transport.aborted and said in caplog.text
    else:  # a record cut short by the end of the stream
        assert not pipe.transport.aborted
        assert protocol.eof_received() is None
        assert pipe.transport.aborted and "inside a TLS record" in caplog.text
    assert not relay.eof
    deliver(protocol, b"more", random.Random(1))
    assert relay.got == b"" or said == ""


@pytest.mark.parametrize("secret", [PLAIN, EE], ids=["plain", "ee"])
async def test_a_proxy_that_ends_unanswered_resets_the_client_naming_it(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="detour")
    stream, plain_pipe = await open_stream(secret)
    stream.inner = pipe = FastPipe()
    init, client = initiate(Tag.PADDED, 2)
    stream.write(init + client.encrypt(encode_packet(Tag.PADDED, os.urandom(40))))
    assert stream.raw_socket_stream() is not None and pipe.transport.protocol is None
    transport, pending, _ = stream.raw_socket_stream().detach()  # type: ignore[union-attr]
    relay = Relay()
    transport.set_protocol(relay)
    assert pending == b"" and pipe.transport.protocol.eof_received() is None
    assert pipe.transport.aborted and not relay.eof  # a reset, not a clean end
    assert "MTProto proxy 192.0.2.9:443 closed the connection without answering" in caplog.text


async def test_no_fast_path_once_the_proxy_ended_unanswered() -> None:
    stream, _ = await open_stream(PLAIN)
    stream.inner = pipe = FastPipe()
    pipe.protocol = type("Seen", (), {"eof": True})()  # the socket's end of stream, unread
    init, client = initiate(Tag.INTERMEDIATE, 2)
    stream.write(init + client.encrypt(encode_packet(Tag.INTERMEDIATE, os.urandom(40))))
    assert stream.raw_socket_stream() is None  # left to read(), which names the proxy


async def test_the_stream_offers_one_stand_in_per_socket() -> None:
    stream, pipe, _, _ = await started(PLAIN)
    assert isinstance(stream, MTProxyStream)
    assert stream.raw_socket_stream() is stream.raw_socket_stream()
