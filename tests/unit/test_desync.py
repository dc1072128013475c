"""`fake`, `disorder`, `oob` (transports/desync.py): the layers' arguments, the decoy hello,
where the server name lies in a stream, and -- against a socket that records every call with
the TTL it was made at -- the exact sequence of sends, TTL changes and writes each trick makes,
and the bytes the server ends up with."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.tls import client_hello, openssl_client_hello, record
from tests.support.waiting import until
from tests.unit.scripted import ScriptedStream
from transports.base import Stream
from transports.chain import ChainError, parse_chain
from transports.desync import (
    OOB_BYTE,
    Cut,
    Desync,
    DesyncStream,
    Trick,
    decoy_client_hello,
    parse_desync,
    server_name_in_stream,
)
from transports.tlsfrag import Fragmenting, fragment_client_hello, server_name_span

HELLO = record(client_hello(b"web.telegram.org"))
# 5 record header | 4 handshake header ... the name is the last 16 bytes of the record
NAME_AT = len(HELLO) - 16
assert HELLO[NAME_AT:] == b"web.telegram.org"
MIDDLE = NAME_AT + 8  # where `sni` cuts: "web.tele" | "gram.org"


# --- the arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fake:ttl=3", Desync(Trick.FAKE, None, 3)),
        ("fake:ttl=3,100", Desync(Trick.FAKE, Cut(100), 3)),
        ("fake:name=www.iana.org,ttl=8", Desync(Trick.FAKE, None, 8, "www.iana.org")),
        ("disorder:1", Desync(Trick.DISORDER, Cut(1), 1)),
        ("disorder:sni,ttl=2", Desync(Trick.DISORDER, Cut(sni=True), 2)),
        ("DISORDER:SNI", Desync(Trick.DISORDER, Cut(sni=True), 1)),
        ("oob:sni", Desync(Trick.OOB, Cut(sni=True))),
        ("oob:40", Desync(Trick.OOB, Cut(40))),
    ],
)
def test_layers_parse(text: str, expected: Desync) -> None:
    assert parse_chain(text).layers[1].params["desync"] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fake", "write fake layers as fake:ttl=N"),
        ("fake:100", "give the decoy's TTL"),
        ("fake:ttl=0", "ttl='0' is not a hop count 1-255"),
        ("fake:ttl=256", "not a hop count"),
        ("fake:ttl=2,ttl=3", "ttl is given twice"),
        ("fake:ttl=2,sni", "'sni' is a cut point for disorder and oob"),
        ("fake:ttl=2,name=a_b", "name='a_b' is not a host name"),
        ("disorder:ttl=1", "give where to cut, an offset or sni"),
        ("disorder:1,2", "the cut point is given twice"),
        ("disorder:0", "'0' is not a byte offset 1-65535"),
        ("oob:1,ttl=2", "unknown argument 'ttl=2' (oob:OFFSET|sni)"),
        ("oob:x", "'x' is not a byte offset"),
    ],
)
def test_bad_arguments_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(ChainError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_chain(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tlsfrag:sni | disorder:1", "write it right after direct, before tlsfrag:sni"),
        ("split:1 | oob:1", "write it right after direct, before split:1"),
        ("socks5://10.0.0.2:1080 | fake:ttl=3", "those packets go to the proxy"),
        ("http://10.0.0.2:3128 | oob:sni", "those packets go to the proxy"),
        ("oob:sni | socks5://10.0.0.2:1080", "only tlsfrag, front: and tgws can follow"),
        ("disorder:1 | split:5", "sends the first bytes in pieces itself"),
        ("oob:1 | disorder:sni", "only one of fake, disorder, oob"),
        ("pt:obfs4 192.0.2.3:443 cert=x iat-mode=0 | socks5://127.0.0.1:1080 | oob:1", "proxy"),
    ],
)
def test_packet_layers_stand_right_after_the_base(text: str, message: str) -> None:
    with pytest.raises(ChainError, match=message):
        parse_chain(text)


@pytest.mark.parametrize(
    "text",
    ["fake:ttl=2", "resolve:udp=10.0.0.53 | disorder:sni", "direct | oob:1 | tlsfrag:sni"],
)
def test_packet_layers_compose_with_resolve_and_tlsfrag(text: str) -> None:
    assert str(parse_chain(text)) == text


def test_the_diagnosis_counts_disorder_and_oob_as_splitting_the_hello() -> None:
    assert parse_chain("disorder:1").splits_client_hello
    assert parse_chain("oob:sni").splits_client_hello
    assert not parse_chain("fake:ttl=3").splits_client_hello


def test_parse_refuses_where_the_kernel_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("transports.desync.SUPPORTED", False)
    with pytest.raises(ValueError, match="needs Linux"):
        parse_desync(Trick.OOB, ["1"])


# --- the decoy and the server name -------------------------------------------------------------


# The smallest decoy for www.example.com is 189 bytes; 190-192 shorten its session id.
@pytest.mark.parametrize("length", [189, 190, 191, 192, 193, 194, 300, 517, 16389])
def test_the_decoy_is_a_hello_for_its_name_of_exactly_the_length(length: int) -> None:
    decoy = decoy_client_hello("www.example.com", length)
    assert len(decoy) == length
    assert decoy[:3] == b"\x16\x03\x01" and int.from_bytes(decoy[3:5], "big") == length - 5
    start, end = server_name_span(decoy[5:])
    assert decoy[5 + start : 5 + end] == b"www.example.com"


def test_a_decoy_shorter_than_any_hello_is_the_start_of_one() -> None:
    short = decoy_client_hello("www.example.com", 40, bytes)
    assert short == decoy_client_hello("www.example.com", 189, bytes)[:40]


def test_server_name_in_one_record() -> None:
    assert server_name_in_stream(HELLO) == (NAME_AT, MIDDLE, len(HELLO))


def test_server_name_across_the_records_tlsfrag_made() -> None:
    hello = openssl_client_hello("web.telegram.org")
    wire = b"".join(fragment_client_hello(hello, Fragmenting((1, 30), sni=True)))
    start, middle, end = server_name_in_stream(wire)
    # the name's bytes in the stream, with the record header that cuts it in two
    assert wire[start:end].replace(wire[start + 8 : start + 13], b"") == b"web.telegram.org"
    assert middle == start + 8 + 5  # "web.tele" | header | "gram.org"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x16\x03\x01", b"GET / HTTP/1.1\r\n\r\n", record(client_hello(None)), HELLO[:-3]],
)
def test_no_server_name_no_span(data: bytes) -> None:
    assert server_name_in_stream(data) is None


# --- the tricks, against a recording socket ------------------------------------------------------


class Log(list):
    """Every socket call and every write through the transport, in order."""


class Inner(ScriptedStream):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def write(self, data: bytes) -> None:
        super().write(data)
        self.log.append(("write", bytes(data)))

    def raw_socket_stream(self) -> Stream:
        return self

    def abort(self) -> None:
        super().abort()
        self.log.append(("abort",))


class Pages:
    def __init__(self, log: Log, sent: int) -> None:
        self.log = log
        self.sent = sent

    def overwrite(self, data: bytes) -> None:
        self.log.append(("overwrite", data))

    def close(self) -> None:
        self.log.append(("pages closed",))


class RecordingSocket:
    """A PacketSocket that records each call with the hop limit in force; `unsent` answers
    from a script (the last answer repeats)."""

    def __init__(self, log: Log, unsent: tuple[int, ...] = (0,), accepts: int = 1 << 20) -> None:
        self.log = log
        self.ttl = 64
        self._unsent = list(unsent)
        self.accepts = accepts

    def hop_limit(self) -> int:
        return self.ttl

    def set_hop_limit(self, value: int) -> None:
        self.ttl = value
        self.log.append(("ttl", value))

    def send(self, data: bytes, *, urgent: bool = False) -> int:
        sent = min(len(data), self.accepts)
        self.log.append(("send", data[:sent], self.ttl, urgent))
        return sent

    def send_shared(self, data: bytes) -> Pages:
        sent = min(len(data), self.accepts)
        self.log.append(("send_shared", data[:sent], self.ttl))
        return Pages(self.log, sent)

    def unsent(self) -> int:
        return self._unsent.pop(0) if len(self._unsent) > 1 else self._unsent[0]

    def close(self) -> None:
        self.log.append(("socket closed",))


def playing(desync: Desync, **socket_options) -> tuple[DesyncStream, Log]:
    log = Log()
    sock = RecordingSocket(log, **socket_options)
    stream = DesyncStream(Inner(log), desync, sockets=lambda inner: sock, random_bytes=bytes)
    return stream, log


def received(log: Log) -> bytes:
    """What the server's TCP hands its application: sends and writes in order, the decoy's
    pages as overwritten, the urgent byte taken out."""
    out = bytearray()
    for event in log:
        if event[0] == "send":
            data, urgent = event[1], event[3]
            out += data[:-1] if urgent else data
        elif event[0] == "send_shared":
            out += event[1]
        elif event[0] == "overwrite":
            out[-len(event[1]) :] = event[1]
        elif event[0] == "write":
            out += event[1]
    return bytes(out)


def test_fake_sends_a_decoy_at_the_low_ttl_then_overwrites_it_with_the_real_hello() -> None:
    stream, log = playing(Desync(Trick.FAKE, None, 3))
    stream.write(HELLO + b"early data")
    decoy = decoy_client_hello("www.example.com", len(HELLO), bytes)
    assert log == [
        ("ttl", 3),
        ("send_shared", decoy[:-1], 3),  # all but the last byte, which goes out normally
        ("overwrite", HELLO[:-1]),  # what the retransmission carries
        ("pages closed",),
        ("ttl", 64),
        ("socket closed",),
        ("write", HELLO[-1:] + b"early data"),
    ]  # fmt: skip
    assert received(log) == HELLO + b"early data"
    assert stream.raw_socket_stream() is stream.inner


def test_fake_with_an_offset_decoys_only_the_first_bytes() -> None:
    stream, log = playing(Desync(Trick.FAKE, Cut(40), 5))
    stream.write(HELLO)
    decoy = decoy_client_hello("www.example.com", len(HELLO), bytes)[:40]
    assert [e[0] for e in log] == ["ttl", "send_shared", "overwrite", "pages closed", "ttl",
                                   "socket closed", "write"]  # fmt: skip
    assert log[1] == ("send_shared", decoy, 5)
    assert log[2] == ("overwrite", HELLO[:40]) and log[-1] == ("write", HELLO[40:])


def test_fake_of_plain_bytes_is_random_bytes() -> None:
    stream, log = playing(Desync(Trick.FAKE, None, 4))
    stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert log[1] == ("send_shared", bytes(17), 4)
    assert received(log) == b"GET / HTTP/1.1\r\n\r\n"


def test_disorder_sends_the_first_piece_at_ttl_1_then_the_rest() -> None:
    stream, log = playing(Desync(Trick.DISORDER, Cut(sni=True), 1))
    stream.write(HELLO)
    assert log == [
        ("ttl", 1),
        ("send", HELLO[:MIDDLE], 1, False),
        ("ttl", 64),
        ("socket closed",),
        ("write", HELLO[MIDDLE:]),
    ]


def test_oob_puts_one_urgent_byte_after_the_first_piece() -> None:
    stream, log = playing(Desync(Trick.OOB, Cut(sni=True)))
    stream.write(HELLO)
    assert log == [
        ("send", HELLO[:MIDDLE] + OOB_BYTE, 64, True),
        ("write", HELLO[MIDDLE:]),
        ("socket closed",),
    ]
    assert received(log) == HELLO


def test_the_record_is_held_until_complete_however_it_is_written() -> None:
    stream, log = playing(Desync(Trick.DISORDER, Cut(10), 1))
    for i in range(0, len(HELLO), 7):
        stream.write(HELLO[i : i + 7])
        assert (log == []) == (i + 7 < len(HELLO))
    assert log[1] == ("send", HELLO[:10], 1, False)
    assert received(log) == HELLO


@pytest.mark.parametrize(
    ("desync", "first"),
    [
        (Desync(Trick.DISORDER, Cut(sni=True), 1), record(client_hello(None))),  # no name
        (Desync(Trick.OOB, Cut(500), None), HELLO),  # the cut is past the message
        (Desync(Trick.OOB, Cut(sni=True)), b"\x05\x01\x00"),  # not TLS: no server name
    ],
)
def test_nothing_to_cut_sends_the_message_unchanged(desync: Desync, first: bytes) -> None:
    stream, log = playing(desync)
    stream.write(first)
    assert log == [("write", first)]


def test_without_a_socket_the_bytes_go_through_unchanged() -> None:
    log = Log()
    stream = DesyncStream(Inner(log), Desync(Trick.OOB, Cut(1)), sockets=lambda inner: None)
    stream.write(HELLO)
    stream.write(b"more")
    assert log == [("write", HELLO), ("write", b"more")]


def test_an_urgent_byte_that_did_not_fit_resets_the_connection() -> None:
    stream, log = playing(Desync(Trick.OOB, Cut(20)), accepts=10)
    with pytest.raises(ConnectionResetError, match="did not fit"):
        stream.write(HELLO)
    assert ("abort",) in log


def test_eof_before_the_record_is_complete_sends_what_is_held() -> None:
    stream, log = playing(Desync(Trick.DISORDER, Cut(3), 1))
    stream.write(HELLO[:20])
    stream.write_eof()
    assert log == [("write", HELLO[:20])]
    assert stream.inner.eof_written


async def test_a_segment_still_in_the_socket_keeps_the_ttl_low_until_it_has_left() -> None:
    stream, log = playing(Desync(Trick.DISORDER, Cut(5), 1), unsent=(5, 5, 5, 0))
    stream.write(HELLO)
    stream.write(b"second write")
    stream.write_eof()
    assert log == [("ttl", 1), ("send", HELLO[:5], 1, False)]  # nothing more yet
    assert stream.raw_socket_stream() is None
    await stream.drain()
    assert log[2:] == [
        ("ttl", 64),
        ("socket closed",),
        ("write", HELLO[5:]),
        ("write", b"second write"),
    ]
    await asyncio.sleep(0)
    assert stream.inner.eof_written
    assert received(log) == HELLO + b"second write"
    assert stream.raw_socket_stream() is stream.inner


async def test_abort_while_waiting_stops_the_trick() -> None:
    stream, log = playing(Desync(Trick.FAKE, None, 2), unsent=(1,))
    stream.write(HELLO)
    stream.abort()
    await until(lambda: ("abort",) in log)
    await asyncio.sleep(0.01)  # time for a wrong overwrite to show
    assert log[-3:] == [("pages closed",), ("socket closed",), ("abort",)]
    assert not any(event[0] == "overwrite" for event in log)


def test_a_hello_tlsfrag_cut_into_records_is_one_message() -> None:
    wire = b"".join(fragment_client_hello(HELLO, Fragmenting(sni=True)))
    stream, log = playing(Desync(Trick.DISORDER, Cut(sni=True), 1))
    stream.write(wire + b"after")
    start, cut, _ = server_name_in_stream(wire)
    assert cut == start + 8 + 5  # the middle of the name, past the header of its record
    assert log[1] == ("send", wire[:cut], 1, False)
    assert log[-1] == ("write", wire[cut:] + b"after")
