"""`tlsfrag` (transports/tlsfrag.py): the ClientHello parser, the exact records the rewrite
produces, and the wrapper stream against a recording fake (every write kept separately)."""

from __future__ import annotations

import pytest

from tests.support.tls import client_hello, openssl_client_hello, read_records, record
from tests.unit.scripted import ScriptedStream
from transports.base import Endpoint, Stream
from transports.tlsfrag import (
    Fragmenting,
    TlsFragDialer,
    TlsFragStream,
    fragment_client_hello,
    server_name_span,
)

HELLO = client_hello(b"example.com")
# The hand-built ClientHello for example.com, 67 bytes; offsets into the handshake message:
#   0 msg_type 01 | 1-3 length 00 00 3f | 4-5 version 03 03 | 6-37 random | 38 session id 00
#  39-42 cipher suites 00 02 13 01 | 43-44 compression 01 00 | 45-46 extensions 00 14
#  47-48 type 00 00 (server_name) | 49-50 length 00 10 | 51-52 list 00 0e | 53 host_name 00
#  54-55 name length 00 0b | 56-66 "example.com"
assert HELLO[56:67] == b"example.com" and len(HELLO) == 67
RECORD = record(HELLO)  # 16 03 01 00 43 + HELLO

SNI = Fragmenting(sni=True)


class Recording(ScriptedStream):
    """A recording fake that, like a plain TCP stream, offers itself for the fast path."""

    def raw_socket_stream(self) -> Stream:
        return self


# --- the parser ---------------------------------------------------------------------------


def test_server_name_span_of_the_hand_built_hello() -> None:
    assert server_name_span(HELLO) == (56, 67)


def test_server_name_span_of_an_openssl_hello() -> None:
    hello = openssl_client_hello("web.telegram.org")[5:]
    start, end = server_name_span(hello)
    assert hello[start:end] == b"web.telegram.org"


def test_server_name_after_other_extensions() -> None:
    # an unrelated extension first: type 00 2b (supported_versions), length 00 03, data 02 03 04
    hello = client_hello(b"t.me", extra=b"\x00\x2b\x00\x03\x02\x03\x04")
    start, end = server_name_span(hello)
    assert hello[start:end] == b"t.me"


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(client_hello(None), id="no-server-name"),
        pytest.param(client_hello(b""), id="empty-name"),
        pytest.param(b"\x02" + HELLO[1:], id="server-hello-type"),
        pytest.param(HELLO[:-1], id="truncated"),
        pytest.param(HELLO + b"\x00", id="trailing-byte"),
        pytest.param(HELLO[:1] + b"\x00\x00\x40" + HELLO[4:], id="length-too-long"),
        pytest.param(HELLO[:45] + b"\x00\x15" + HELLO[47:], id="extensions-length-lies"),
        pytest.param(HELLO[:54] + b"\xff\xff" + HELLO[56:], id="name-length-lies"),
        pytest.param(b"", id="empty"),
    ],
)
def test_server_name_span_rejects(hello: bytes) -> None:
    assert server_name_span(hello) is None


# --- the rewrite --------------------------------------------------------------------------


def test_sni_split_cuts_in_the_middle_of_the_name() -> None:
    assert fragment_client_hello(RECORD, SNI) == [
        b"\x16\x03\x01\x00\x3d" + HELLO[:61],  # handshake, TLS 1.0 record, 61 bytes: ...examp
        b"\x16\x03\x01\x00\x06" + b"le.com",  # the rest of the name, 6 bytes
    ]


def test_fixed_offset_split() -> None:
    assert (
        fragment_client_hello(RECORD, Fragmenting(offsets=(1,)))
        == [
            b"\x16\x03\x01\x00\x01" + b"\x01",  # 1 byte: msg_type ClientHello
            b"\x16\x03\x01\x00\x42" + HELLO[1:],  # the other 66
        ]
    )


def test_several_cut_points_make_several_records() -> None:
    records = fragment_client_hello(RECORD, Fragmenting(offsets=(1, 70), sni=True))
    # 70 is past the end of the 67-byte message and is ignored
    assert records == [
        b"\x16\x03\x01\x00\x01" + HELLO[:1],
        b"\x16\x03\x01\x00\x3c" + HELLO[1:61],
        b"\x16\x03\x01\x00\x06" + HELLO[61:],
    ]


def test_record_version_is_kept() -> None:
    (first, second) = fragment_client_hello(record(HELLO, b"\x03\x03"), Fragmenting(offsets=(4,)))
    assert first[:5] == b"\x16\x03\x03\x00\x04" and second[:5] == b"\x16\x03\x03\x00\x3f"


def test_bytes_after_the_record_follow_unchanged() -> None:
    chunks = fragment_client_hello(RECORD + b"early data", SNI)
    assert chunks is not None
    assert chunks[-1] == b"early data"
    assert [fragment for _, _, fragment in read_records(b"".join(chunks[:-1]))] == [
        HELLO[:61],
        HELLO[61:],
    ]


def test_openssl_hello_reassembles() -> None:
    data = openssl_client_hello("web.whatsapp.com")
    records = read_records(b"".join(fragment_client_hello(data, SNI)))
    assert len(records) == 2
    assert all(
        content_type == 0x16 and version == data[1:3] for content_type, version, _ in records
    )
    assert b"".join(fragment for _, _, fragment in records) == data[5:]
    assert b"web.whatsapp.com" not in records[0][2] and b"web.whatsapp.com" not in records[1][2]


@pytest.mark.parametrize(
    ("data", "how"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n", SNI, id="http"),
        pytest.param(b"\x16", SNI, id="one-byte-handshake-type-only-waits"),
        pytest.param(b"\x16\x03\x01\x00", SNI, id="partial-header-waits"),
        pytest.param(RECORD[:-1], SNI, id="partial-record-waits"),
        pytest.param(b"\x16\x02\x00\x00\x01\x01", SNI, id="not-version-3"),
        pytest.param(b"\x16\x03\x01\x00\x00", SNI, id="empty-record"),
        pytest.param(b"\x16\x03\x01\x40\x01" + b"\x01" * 16385, SNI, id="record-over-2^14"),
        pytest.param(record(b"\x02" + HELLO[1:]), SNI, id="not-a-client-hello"),
        pytest.param(record(client_hello(None)), SNI, id="sni-but-no-server-name"),
        pytest.param(RECORD, Fragmenting(offsets=(67,)), id="offset-at-the-end"),
        pytest.param(RECORD, Fragmenting(offsets=(500,)), id="offset-past-the-end"),
    ],
)
def test_left_alone(data: bytes, how: Fragmenting) -> None:
    """Not TLS, or not a ClientHello we can cut: unchanged, at once; an incomplete first
    record: None (wait for the rest)."""
    waits = data in (b"\x16", b"\x16\x03\x01\x00", RECORD[:-1])
    assert fragment_client_hello(data, how) == (None if waits else [data])


# --- the stream ---------------------------------------------------------------------------


def test_stream_holds_the_record_until_complete_then_writes_once() -> None:
    inner = Recording()
    stream = TlsFragStream(inner, SNI)
    stream.write(RECORD[:3])  # 16 03 01: not enough to know the length
    stream.write(RECORD[3:40])
    assert inner.writes == []
    assert stream.raw_socket_stream() is None  # still rewriting: no fast path
    stream.write(RECORD[40:] + b"GET")
    # Without `segments`, both records and what followed go out in one write.
    assert inner.writes == [b"\x16\x03\x01\x00\x3d" + HELLO[:61] + b"\x16\x03\x01\x00\x06le.comGET"]
    assert stream.raw_socket_stream() is inner
    stream.write(b" / more")
    assert inner.writes[-1] == b" / more"


def test_segments_write_each_record_separately() -> None:
    inner = Recording()
    stream = TlsFragStream(inner, Fragmenting(offsets=(1,), sni=True, segments=True))
    stream.write(RECORD + b"tail")
    assert inner.writes == [
        b"\x16\x03\x01\x00\x01" + HELLO[:1],
        b"\x16\x03\x01\x00\x3c" + HELLO[1:61],
        b"\x16\x03\x01\x00\x06" + HELLO[61:],
        b"tail",
    ]


def test_non_tls_passes_through_at_once() -> None:
    inner = Recording()
    stream = TlsFragStream(inner, SNI)
    stream.write(b"G")
    assert inner.writes == [b"G"]
    assert stream.raw_socket_stream() is inner


def test_end_of_stream_releases_a_partial_record_unchanged() -> None:
    inner = Recording()
    stream = TlsFragStream(inner, SNI)
    stream.write(RECORD[:10])
    stream.write_eof()
    assert inner.writes == [RECORD[:10]]
    assert inner.eof_written


def test_close_releases_a_partial_record_and_abort_drops_it() -> None:
    closed, aborted = Recording(), Recording()
    for inner in (closed, aborted):
        TlsFragStream(inner, SNI).write(RECORD[:10])
    TlsFragStream(closed, SNI).close()  # a fresh wrapper holds nothing: writes nothing
    stream = TlsFragStream(closed, SNI)
    stream.write(b"\x16\x03")
    stream.close()
    assert closed.writes == [b"\x16\x03"] and closed.closed
    stream = TlsFragStream(aborted, SNI)
    stream.write(b"\x16\x03")
    stream.abort()
    assert aborted.writes == [] and aborted.closed


async def test_reads_and_unreads_go_to_the_inner_stream() -> None:
    inner = Recording([b"server hello"])
    stream = TlsFragStream(inner, SNI)
    assert await stream.read(6) == b"server"
    stream.unread(b"server")
    assert await stream.read() == b"server"
    assert await stream.read() == b" hello"


async def test_dialer_wraps_the_inner_stream() -> None:
    inner = Recording()
    dialed: list[Endpoint] = []

    class Fake:
        async def dial(self, target: Endpoint) -> Stream:
            dialed.append(target)
            return inner

    stream = await TlsFragDialer(Fake(), SNI).dial(Endpoint("example.com", 443))
    assert dialed == [Endpoint("example.com", 443)]
    stream.write(RECORD)
    assert len(inner.writes) == 1 and len(read_records(inner.writes[0])) == 2


@pytest.mark.parametrize(
    "how", [Fragmenting(), Fragmenting(offsets=(0,)), Fragmenting(segments=True)]
)
def test_dialer_rejects_no_cut_point(how: Fragmenting) -> None:
    with pytest.raises(ValueError):
        TlsFragDialer(None, how)  # type: ignore[arg-type]
