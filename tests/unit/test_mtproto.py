"""MTProto's outer layers without sockets: the obfuscated2 init and ciphers (checked against
Telethon's, an independent implementation), the transports' packet framing, the first
messages of a key exchange, and the DC table."""

from __future__ import annotations

import struct

import pytest

from transports.mtproto import (
    DEFAULT_DCS,
    INIT_LEN,
    DataCentre,
    FramingError,
    InitError,
    Keystream,
    PacketReader,
    PacketSplitter,
    Tag,
    TransportKind,
    WebEndpoint,
    accept,
    classify,
    dc_field,
    encode_packet,
    initiate,
)
from transports.mtproto import messages as tl
from transports.mtproto.dcs import planet_names
from transports.mtproto.obfuscated2 import initiate_relayed

telethon = pytest.importorskip("telethon")
from telethon.crypto import AESModeCTR  # noqa: E402
from telethon.crypto import rsa as telethon_rsa  # noqa: E402
from telethon.network.connection.tcpabridged import AbridgedPacketCodec  # noqa: E402
from telethon.network.connection.tcpintermediate import (  # noqa: E402
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)
from telethon.network.connection.tcpobfuscated import ObfuscatedIO  # noqa: E402

# --- obfuscated2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "tag"),
    [
        (AbridgedPacketCodec, Tag.ABRIDGED),
        (IntermediatePacketCodec, Tag.INTERMEDIATE),
        (RandomizedIntermediatePacketCodec, Tag.PADDED),
    ],
)
def test_accept_reads_telethons_init_and_both_ciphers_agree(codec, tag) -> None:
    init, encryptor, decryptor = ObfuscatedIO.init_header(codec)
    header, server = accept(bytes(init))
    assert header.tag is tag
    assert server.decrypt(encryptor.encrypt(b"from the client")) == b"from the client"
    assert decryptor.encrypt(server.encrypt(b"from the server")) == b"from the server"
    # and the streams go on from there
    assert server.decrypt(encryptor.encrypt(b"x" * 1000)) == b"x" * 1000


def test_telethons_scheme_reads_our_init() -> None:
    init, client = initiate(Tag.INTERMEDIATE, dc_field(2, media=True))
    raw = bytearray(init)
    backward = raw[55:7:-1]
    up = AESModeCTR(bytes(raw[8:40]), bytes(raw[40:56]))
    down = AESModeCTR(bytes(backward[:32]), bytes(backward[32:48]))
    plain = up.encrypt(bytes(init))
    assert plain[56:60] == Tag.INTERMEDIATE.value
    assert struct.unpack("<h", plain[60:62]) == (-2,)
    assert up.encrypt(client.encrypt(b"request")) == b"request"
    assert client.decrypt(down.encrypt(b"answer")) == b"answer"


def test_the_header_says_dc_media_and_test() -> None:
    for dc, media, test in [(2, False, False), (4, True, False), (1, False, True), (3, True, True)]:
        init, _ = initiate(Tag.ABRIDGED, dc_field(dc, media=media, test=test))
        header, _ = accept(init)
        assert (header.dc, header.media, header.test) == (dc, media, test)
    with pytest.raises(ValueError):
        dc_field(40000)


def test_an_init_never_starts_like_another_transport() -> None:
    forbidden = [
        b"\xef" + bytes(63),
        b"HEAD" + bytes(60),
        b"POST" + bytes(60),
        b"GET " + bytes(60),
        b"OPTI" + bytes(60),
        b"\xee\xee\xee\xee" + bytes(60),
        b"\xdd\xdd\xdd\xdd" + bytes(60),
        b"\x16\x03\x01\x02" + bytes(60),
        b"\x16\x03\x95\x00" + bytes(60),  # any TLS record start, not only 16 03 01 02
        b"PUT /" + bytes(59),
        b"CONNECT " + bytes(56),
        b"abcd\0\0\0\0" + bytes(56),
    ]
    good = b"\x01" * 64
    draws = iter([*forbidden, good])
    init, _ = initiate(Tag.ABRIDGED, urandom=lambda n: next(draws))
    assert init[:56] == good[:56]
    for bad in forbidden:
        assert classify(bad) is not TransportKind.OBFUSCATED2


def test_a_secret_changes_the_keys_and_a_wrong_one_is_refused() -> None:
    secret = bytes(range(16))
    init, client = initiate(Tag.PADDED, 3, secret=secret)
    header, server = accept(init, secret=secret)
    assert (header.tag, header.dc) == (Tag.PADDED, 3)
    assert server.decrypt(client.encrypt(b"hi")) == b"hi"
    refused = 0
    for _ in range(20):
        init, _ = initiate(Tag.PADDED, 3, secret=secret)
        try:
            accept(init, secret=b"\x01" * 16)
        except InitError:
            refused += 1
    assert refused >= 19  # a wrong secret's tag is noise (1 in 2^30 matches by chance)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", None),
        (b"\xef", TransportKind.ABRIDGED),
        (b"\xee\xee\xee", None),
        (b"\xee\xee\xee\xee", TransportKind.INTERMEDIATE),
        (b"\xdd\xdd\xdd\xdd\x10", TransportKind.PADDED),
        (b"POST /api HTTP/1.1", TransportKind.HTTP),
        (b"\x16\x03\x01\x02\x00", TransportKind.TLS),
        (b"\x28\x00\x00\x00\x00\x00\x00\x00", TransportKind.FULL),  # length 40, seqno 0
        (b"\x01\x02\x03\x04\x05", None),
        (b"\x01\x02\x03\x04\x05\x06\x07\x08", TransportKind.OBFUSCATED2),
    ],
)
def test_classify(data: bytes, kind: TransportKind | None) -> None:
    assert classify(data) is kind


def test_accept_refuses_what_is_no_init() -> None:
    with pytest.raises(InitError, match="64 bytes"):
        accept(b"\x01" * 63)
    with pytest.raises(InitError, match="another transport"):
        accept(b"\xef" * 64)
    with pytest.raises(InitError, match="protocol tag"):
        accept(bytes(range(1, 65)))


def test_keystream_peek_is_the_stream_at_that_offset() -> None:
    # An IV near the top: the 128-bit counter wraps, as MTProto's does.
    full = Keystream(b"k" * 32, b"\xff" * 15 + b"\xfe").apply(bytes(256))
    peeking = Keystream(b"k" * 32, b"\xff" * 15 + b"\xfe")
    for offset in range(0, 190, 7):
        for n in (1, 4, 16, 17):
            assert peeking.peek(offset, n) == full[offset : offset + n]
    assert peeking.offset == 0


# --- framing -------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(Tag))
@pytest.mark.parametrize("size", [4, 8, 124 * 4, 127 * 4, 200 * 4, 70000])
def test_packets_round_trip_in_any_chunks(tag: Tag, size: int) -> None:
    payloads = [bytes([i]) * size for i in range(1, 4)]
    stream = b"".join(encode_packet(tag, p) for p in payloads)
    for chunk in (1, 3, 1000, len(stream)):
        reader = PacketReader(tag)
        got = []
        for i in range(0, len(stream), chunk):
            got += reader.feed(stream[i : i + chunk])
        if tag is Tag.PADDED:
            got = [g[:size] for g in got]  # the MTProto message inside says its length
        assert got == payloads
        assert reader.pending == 0


def test_abridged_lengths_are_words_and_long_ones_take_four_bytes() -> None:
    assert encode_packet(Tag.ABRIDGED, bytes(8))[:1] == b"\x02"
    assert encode_packet(Tag.ABRIDGED, bytes(127 * 4))[:4] == b"\x7f\x7f\x00\x00"
    with pytest.raises(ValueError):
        encode_packet(Tag.ABRIDGED, bytes(5))


def test_a_quick_ack_flag_is_no_part_of_the_length() -> None:
    reader = PacketReader(Tag.INTERMEDIATE)
    assert reader.feed(struct.pack("<I", 0x80000004) + b"abcd") == [b"abcd"]
    reader = PacketReader(Tag.ABRIDGED)
    assert reader.feed(b"\x81abcd") == [b"abcd"]


@pytest.mark.parametrize(
    ("tag", "data", "message"),
    [
        (Tag.INTERMEDIATE, struct.pack("<I", 0), "empty"),
        (Tag.ABRIDGED, b"\x00", "empty"),
        (Tag.ABRIDGED, b"\x7f\x00\x00\x00", "empty"),
        (Tag.INTERMEDIATE, struct.pack("<I", (2 << 20) + 1), "at most"),
        (Tag.ABRIDGED, b"\x7f\xff\xff\xff", "at most"),
    ],
)
def test_impossible_lengths_are_errors(tag: Tag, data: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        PacketSplitter(tag).feed(data)


def test_the_splitter_cuts_an_encrypted_stream_at_its_packets() -> None:
    init, client = initiate(Tag.INTERMEDIATE)
    packets = [encode_packet(Tag.INTERMEDIATE, bytes([i]) * (i * 100)) for i in range(1, 6)]
    wire = client.encrypt(b"".join(packets))
    _, server = accept(init)
    splitter = PacketSplitter(
        Tag.INTERMEDIATE,
        reveal=lambda offset, raw: bytes(
            a ^ b for a, b in zip(raw, server.receive.peek(64 + offset, len(raw)), strict=True)
        ),
    )
    cut = []
    for i in range(0, len(wire), 37):
        cut += [bytes(p) for p in splitter.feed(wire[i : i + 37])]
    assert cut == [wire[sum(map(len, packets[:i])) :][: len(p)] for i, p in enumerate(packets)]
    assert server.decrypt(b"".join(cut)) == b"".join(packets)


def test_the_splitter_hands_out_a_cut_off_packet() -> None:
    splitter = PacketSplitter(Tag.INTERMEDIATE)
    assert splitter.feed(struct.pack("<I", 8) + b"abc") == []
    assert splitter.pending == 7
    assert splitter.take_pending() == struct.pack("<I", 8) + b"abc"
    assert splitter.offset == 7


# --- messages ------------------------------------------------------------------------------


def test_req_pq_multi_and_res_pq_round_trip() -> None:
    nonce = bytes(range(16))
    message = tl.unencrypted(tl.req_pq_multi(nonce), 12345 << 2)
    msg_id, body = tl.parse_unencrypted(message)
    assert msg_id == 12345 << 2
    assert tl.parse_req_pq(body) == nonce
    answer = tl.ResPQ(nonce, bytes(16), (1229739323 * 1402015859).to_bytes(8, "big"), (-5, 7))
    parsed = tl.parse_res_pq(tl.res_pq(answer))
    assert parsed == answer
    assert parsed.pq_value == 1229739323 * 1402015859


def test_long_tl_strings() -> None:
    assert tl.tl_bytes(b"ab") == b"\x02ab\x00"
    assert tl.tl_bytes(bytes(300))[:4] == b"\xfe\x2c\x01\x00"
    assert len(tl.tl_bytes(bytes(300))) % 4 == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"short", "too few"),
        (b"\x01" + bytes(19), "encrypted message"),
        (bytes(16) + struct.pack("<I", 100) + b"body", "carries fewer"),
    ],
)
def test_unencrypted_message_errors(payload: bytes, message: str) -> None:
    with pytest.raises(tl.MessageError, match=message):
        tl.parse_unencrypted(payload)


def test_res_pq_errors() -> None:
    with pytest.raises(tl.MessageError, match="expected resPQ"):
        tl.parse_res_pq(tl.req_pq_multi(bytes(16)))
    good = tl.res_pq(tl.ResPQ(bytes(16), bytes(16), b"\x17", (1,)))
    with pytest.raises(tl.MessageError):
        tl.parse_res_pq(good[:-4])


def test_transport_errors() -> None:
    assert tl.transport_error(struct.pack("<i", -404)) == -404
    assert tl.transport_error(struct.pack("<i", 404)) is None
    assert tl.transport_error(bytes(8)) is None


def test_fingerprints_match_telethons_for_its_keys() -> None:
    keys = telethon_rsa._server_keys
    assert keys
    for fingerprint, (key, _old) in keys.items():
        assert tl.rsa_fingerprint(key.n, key.e) == fingerprint


def test_req_dh_params_is_read() -> None:
    body = (
        struct.pack("<I", tl.REQ_DH_PARAMS)
        + bytes(16)
        + b"\x01" * 16
        + tl.tl_bytes(b"\x49\x4c\x55\x3b")
        + tl.tl_bytes(b"\x53\x91\x10\x73")
        + struct.pack("<q", -3414540481677951611)
        + tl.tl_bytes(bytes(256))
    )
    request = tl.parse_req_dh_params(body)
    assert (request.p, request.q) == (b"\x49\x4c\x55\x3b", b"\x53\x91\x10\x73")
    assert request.fingerprint == -3414540481677951611
    assert len(request.encrypted_data) == 256


# --- the DC table --------------------------------------------------------------------------


def test_lookup_by_address() -> None:
    assert DEFAULT_DCS.lookup("149.154.167.51") == DataCentre(2)
    assert DEFAULT_DCS.lookup("::ffff:149.154.167.51") == DataCentre(2)
    assert DEFAULT_DCS.lookup("2001:67c:4e8:f002::a") == DataCentre(2)
    assert DEFAULT_DCS.lookup("[2001:0b28:f23d:f001:0000:0000:0000:000a]") == DataCentre(1)
    assert DEFAULT_DCS.lookup("149.154.167.151") == DataCentre(2, media=True)
    assert DEFAULT_DCS.lookup("149.154.175.10") == DataCentre(1, test=True)
    assert DEFAULT_DCS.lookup("web.telegram.org") is None
    assert DEFAULT_DCS.lookup("192.0.2.1") is None


def test_web_endpoints_main_media_test_and_none() -> None:
    assert DEFAULT_DCS.endpoints(DataCentre(2)) == (WebEndpoint("kws2.web.telegram.org"),)
    assert DEFAULT_DCS.endpoints(DataCentre(4, media=True)) == (
        WebEndpoint("kws4-1.web.telegram.org"),
        WebEndpoint("kws4.web.telegram.org"),
    )
    assert DEFAULT_DCS.endpoints(DataCentre(1, test=True)) == (
        WebEndpoint("kws1.web.telegram.org", "/apiws_test"),
    )
    assert DEFAULT_DCS.endpoints(DataCentre(203)) == ()
    assert str(DEFAULT_DCS.with_web_port(8443).endpoints(DataCentre(3))[0]) == (
        "wss://kws3.web.telegram.org:8443/apiws"
    )
    assert planet_names(1).main == ("pluto.web.telegram.org",)


def test_the_table_is_extended_and_lists_a_dcs_addresses() -> None:
    table = DEFAULT_DCS.with_addresses({"127.77.1.52": DataCentre(2)})
    assert table.lookup("127.77.1.52") == DataCentre(2)
    assert DEFAULT_DCS.lookup("127.77.1.52") is None
    addresses = table.addresses_of(DataCentre(2))
    assert addresses[0] == "149.154.167.51"
    assert "127.77.1.52" in addresses and addresses[-1] == "2001:67c:4e8:f002::a"
    assert INIT_LEN == 64


def test_a_relayed_init_makes_the_dc_answer_with_the_clients_keystream() -> None:
    # A proxy's client, and the proxy's side of it (what identify() gives).
    secret = bytes(range(16))
    init, client = initiate(Tag.INTERMEDIATE, 2, secret=secret)
    _, proxy_side = accept(init, secret=secret)
    towards_dc, proxy_to_dc = initiate_relayed(Tag.INTERMEDIATE, -2, proxy_side.send)
    header, dc = accept(towards_dc)  # the DC: no secret
    assert (header.tag, header.dc, header.media) == (Tag.INTERMEDIATE, 2, True)
    # Upward the proxy re-encrypts; downward the DC's bytes are what the client decrypts.
    assert dc.decrypt(proxy_to_dc.encrypt(b"req_pq_multi")) == b"req_pq_multi"
    assert client.decrypt(dc.encrypt(b"resPQ")) == b"resPQ"
    # Only the random bytes (0-8, 62-64) differ from one relayed init to the next.
    again, _ = initiate_relayed(Tag.INTERMEDIATE, -2, accept(init, secret=secret)[1].send)
    assert again[8:62] == towards_dc[8:62]
    with pytest.raises(ValueError, match="used already"):
        initiate_relayed(Tag.INTERMEDIATE, 2, client.send)  # past the init: offset 64


def test_apply_into_is_apply_without_a_new_buffer() -> None:
    one, two = Keystream(bytes(32), bytes(16)), Keystream(bytes(32), bytes(16))
    out = bytearray(100 + 15)
    assert bytes(one.apply_into(bytes(range(100)), out)) == two.apply(bytes(range(100)))
    assert one.offset == two.offset == 100
