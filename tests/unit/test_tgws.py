"""The `tgws` layer without sockets: its place in a chain, which destinations it carries, and
what its stream sends over the WebSocket for each kind of client."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from transports import ChainError, DialError, Endpoint, Failure, Op, parse_chain
from transports.mtproto import (
    INIT_LEN,
    DataCentre,
    PacketReader,
    Tag,
    WebEndpoint,
    accept,
    encode_packet,
    initiate,
)
from transports.tgws import TgWsDialer, TgWsStream, parse_options

# --- the chain ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "tgws",
        "tlsfrag:sni | tgws",
        "split:1 | tgws",
        "socks5://127.0.0.1:1080 | tgws",
        "http://proxy.example:3128 | tgws",
        "resolve:doh=https://1.1.1.1/dns-query | tlsfrag:sni | tgws",
        "tgws:dc2=127.77.1.52,::1;addr=149.154.167.99",
    ],
)
def test_chains_with_tgws(text: str) -> None:
    chain = parse_chain(text)
    assert chain.layers[-1].name == "tgws"
    assert chain.telegram_web
    assert str(chain) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tgws | tlsfrag:sni", "tgws must be the last layer"),
        ("tgws | socks5://127.0.0.1:1080", "'socks5' cannot run inside"),
        ("tgws | tgws", "tgws must be the last layer"),
        ("tgws:dc2", "has no value"),
        ("tgws:dc2=example.com", "not an IP address"),
        ("tgws:dc0=10.0.0.1", "no DC has that number"),
        ("tgws:port=8443", "unknown option 'port'"),
        ("tgws:addr=[::1", "addr="),
        ("tgwsx", "unknown layer"),
    ],
)
def test_chain_errors(text: str, message: str) -> None:
    with pytest.raises(ChainError, match=message.replace("[", r"\[")):
        parse_chain(text)


def test_options() -> None:
    options = parse_options("dc2=127.77.1.52, 127.77.1.62 ; dc5=::ffff:10.0.0.5; addr=10.1.1.1")
    assert options.addresses == {
        "127.77.1.52": DataCentre(2),
        "127.77.1.62": DataCentre(2),
        "10.0.0.5": DataCentre(5),
    }
    assert options.connect_to == Endpoint("10.1.1.1", 443)
    assert parse_options("") == parse_options(" ; ")


# --- which destinations -----------------------------------------------------------------


class NeverDialed:
    async def dial(self, target: Endpoint) -> Any:
        raise AssertionError("tgws dialed for a destination it cannot carry")


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("192.0.2.7", "is not an address of Telegram's data centres"),
        ("web.telegram.org", "is not an address of Telegram's data centres"),
        ("91.105.192.100", "DC 203, which has no web endpoint"),
    ],
)
async def test_what_is_no_dc_fails_at_once_as_not_applicable(host: str, words: str) -> None:
    dialer = TgWsDialer(NeverDialed())
    assert words in (dialer.not_applicable(Endpoint(host, 443)) or "")
    with pytest.raises(DialError) as err:
        await dialer.dial(Endpoint(host, 443))
    assert (err.value.failure, err.value.op) == (Failure.NOT_APPLICABLE, Op.CONNECT)
    assert words in err.value.detail


def test_a_dc_address_is_carried() -> None:
    dialer = TgWsDialer(NeverDialed())
    assert dialer.not_applicable(Endpoint("149.154.167.51", 443)) is None
    assert dialer.not_applicable(Endpoint("2001:67c:4e8:f004::b", 443)) is None


def test_a_route_option_adds_addresses() -> None:
    chain = parse_chain("tgws:dc2=127.77.1.52")
    dialer = chain.build()
    assert dialer.not_applicable(Endpoint("127.77.1.52", 443)) is None
    assert dialer.not_applicable(Endpoint("149.154.167.51", 443)) is None


# --- the stream -----------------------------------------------------------------------------


class FakeWebSocket:
    """Records messages; reads come from `incoming`."""

    def __init__(self, incoming: list[bytes] | None = None) -> None:
        self.messages: list[bytes] = []
        self.incoming = list(incoming or [])
        self.closed_write = False
        self.closed = False

    def write_message(self, data: Any) -> None:
        assert not self.closed_write and not self.closed
        self.messages.append(bytes(data))

    def write_message_parts(self, parts: list[Any]) -> None:
        self.write_message(b"".join(parts))

    def close_write(self) -> None:
        self.closed_write = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    async def read(self, n: int = 65536) -> bytes:
        return self.incoming.pop(0) if self.incoming else b""

    async def drain(self) -> None:
        await asyncio.sleep(0)

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def stream_for(ws: FakeWebSocket, dc: DataCentre | None = None) -> TgWsStream:
    endpoint = WebEndpoint("kws2.web.telegram.org")
    return TgWsStream(ws, dc or DataCentre(2), endpoint)  # type: ignore[arg-type]


def test_an_obfuscated_client_goes_through_unchanged_one_packet_per_message() -> None:
    init, client = initiate(Tag.INTERMEDIATE)
    packets = [encode_packet(Tag.INTERMEDIATE, bytes([i]) * 40 * i) for i in range(1, 5)]
    wire = init + client.encrypt(b"".join(packets))
    ws = FakeWebSocket()
    stream = stream_for(ws)
    for i in range(0, len(wire), 50):  # writes that cut the init and packets anywhere
        stream.write(wire[i : i + 50])
    assert ws.messages[0] == init
    assert b"".join(ws.messages) == wire
    _, server = accept(ws.messages[0])
    assert [server.decrypt(m) for m in ws.messages[1:]] == packets
    stream.write_eof()
    assert ws.closed_write


def test_a_cut_off_packet_still_goes_out_at_the_clients_end() -> None:
    init, client = initiate(Tag.ABRIDGED)
    ws = FakeWebSocket()
    stream = stream_for(ws)
    partial = client.encrypt(encode_packet(Tag.ABRIDGED, bytes(400))[:100])
    stream.write(init + partial)
    assert ws.messages == [init]
    stream.write_eof()
    assert ws.messages == [init, partial]
    assert ws.closed_write


@pytest.mark.parametrize(
    ("marker", "tag"),
    [(b"\xef", Tag.ABRIDGED), (b"\xee" * 4, Tag.INTERMEDIATE), (b"\xdd" * 4, Tag.PADDED)],
)
async def test_a_client_in_the_clear_is_obfuscated_for(marker: bytes, tag: Tag) -> None:
    packets = [encode_packet(tag, bytes([i]) * 8 * i) for i in range(1, 4)]
    ws = FakeWebSocket()
    stream = stream_for(ws, DataCentre(4, media=True))
    stream.write(marker + packets[0][:3])
    stream.write(packets[0][3:] + b"".join(packets[1:]))
    header, server = accept(ws.messages[0])
    assert (header.tag, header.dc, header.media) == (tag, 4, True)
    assert [server.decrypt(m) for m in ws.messages[1:]] == packets
    # The answers come back decrypted, as the client expects them in the clear.
    answer = encode_packet(tag, b"answer!!")
    ws.incoming = [server.encrypt(answer[:5]), server.encrypt(answer[5:])]
    got = await stream.read() + await stream.read()
    assert PacketReader(tag).feed(got)[0][:8] == b"answer!!"
    assert await stream.read() == b""


@pytest.mark.parametrize(
    ("first", "words"),
    [
        (struct.pack("<II", 40, 0) + bytes(40), "full transport"),
        (b"POST /api HTTP/1.1\r\n\r\n", "HTTP"),
        (b"\x16\x03\x01\x02\x00" + bytes(60), "TLS"),
        (bytes(range(1, 65)), "no MTProto"),
    ],
)
def test_what_cannot_be_carried_is_closed_and_nothing_is_sent(first: bytes, words: str) -> None:
    ws = FakeWebSocket()
    stream = stream_for(ws)
    with pytest.raises(ConnectionResetError, match=words):
        stream.write(first)
    assert ws.messages == [] and ws.closed
    with pytest.raises(ConnectionResetError):
        stream.write(b"more")
    stream.write_eof()  # no error: the connection is already over
    assert stream.is_closing()


def test_an_oversized_packet_is_closed() -> None:
    init, client = initiate(Tag.INTERMEDIATE)
    ws = FakeWebSocket()
    stream = stream_for(ws)
    with pytest.raises(ConnectionResetError, match="at most"):
        stream.write(init + client.encrypt(struct.pack("<I", 64 << 20)))
    assert ws.messages == [init] and ws.closed


def test_a_truncated_init_sends_nothing() -> None:
    init, _ = initiate(Tag.INTERMEDIATE)
    ws = FakeWebSocket()
    stream = stream_for(ws)
    stream.write(init[: INIT_LEN - 1])
    stream.write_eof()
    assert ws.messages == [] and ws.closed_write


async def test_unread_bytes_come_back_first() -> None:
    ws = FakeWebSocket([b"later"])
    stream = stream_for(ws)
    stream.unread(b"first")
    assert await stream.read(3) == b"fir"
    assert await stream.read() == b"st"
    assert await stream.read() == b"later"
    assert stream.can_write_eof()
    assert stream.raw_socket_stream() is None
    assert stream.get_extra_info("tgws_endpoint") == "wss://kws2.web.telegram.org/apiws"
