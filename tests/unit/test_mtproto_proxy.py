"""The MTProto proxy's sans-IO parts: secrets and links, the fake-TLS hello and records
(checked against tests/support/mtproxy_client.py, a client written apart from detour's code,
and against fixed vectors it computed), which secret opens an init, the DC's address, packet
lengths, and the handshake driven by scripted bytes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct

import pytest

from helper.proxy.mtproto import (
    Accepted,
    FakeTlsStream,
    MTProtoHandshake,
    ReencryptedStream,
    Refused,
    _ReencryptingSocket,
    _ReencryptingTransport,
)
from tests.support.mtproxy_client import (
    application_records,
    client_hello,
    server_flight_size,
    server_proof_ok,
    split_records,
)
from tests.unit.scripted import ScriptedStream
from transports.mtproto import (
    DEFAULT_DCS,
    FramingError,
    InitError,
    PacketSplitter,
    Tag,
    accept,
    faketls,
)
from transports.mtproto.obfuscated2 import Header, dc_field, initiate
from transports.mtproto.proxy import LengthGuard, dc_address, identify
from transports.mtproto.secret import (
    ProxySecret,
    SecretMode,
    generate_secret,
    parse_secret,
    proxy_link,
)

KEY = bytes(range(16))
NOW = 1_765_000_000
DOMAIN = "www.example.org"


def counting(start: int = 0):
    state = [start]

    def urandom(n: int) -> bytes:
        out = bytes((state[0] + i) % 256 for i in range(n))
        state[0] += n
        return out

    return urandom


# --- secrets and links --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "domain"),
    [
        ("000102030405060708090a0b0c0d0e0f", SecretMode.PLAIN, None),
        ("dd000102030405060708090a0b0c0d0e0f", SecretMode.PADDED, None),
        ("DD000102030405060708090A0B0C0D0E0F", SecretMode.PADDED, None),
        ("ee000102030405060708090a0b0c0d0e0f" + DOMAIN.encode().hex(), SecretMode.FAKE_TLS, DOMAIN),
        # base64url of the same bytes, as some links carry them (padding optional)
        ("AAECAwQFBgcICQoLDA0ODw", SecretMode.PLAIN, None),
        ("3QABAgMEBQYHCAkKCwwNDg8=", SecretMode.PADDED, None),
        ("7gABAgMEBQYHCAkKCwwNDg93d3cuZXhhbXBsZS5vcmc", SecretMode.FAKE_TLS, DOMAIN),
    ],
)
def test_secret_forms(text: str, mode: SecretMode, domain: str | None) -> None:
    secret = parse_secret(text)
    assert (secret.key, secret.mode, secret.domain) == (KEY, mode, domain)
    assert parse_secret(secret.hex()) == secret == parse_secret(secret.base64url())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("00010203", "no proxy secret"),
        ("dd00010203", "no proxy secret"),
        ("ee000102030405060708090a0b0c0d0e0fff", "not ASCII"),
        ("ee000102030405060708090a0b0c0d0e0f" + b"bad host!".hex(), "not a host name"),
        ("zz!!", "hex or base64url"),
    ],
)
def test_bad_secrets_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_secret(text)


def test_secret_repr_hides_the_key() -> None:
    secret = generate_secret(SecretMode.FAKE_TLS, DOMAIN)
    assert secret.key.hex() not in repr(secret) and DOMAIN in repr(secret)
    assert generate_secret().mode is SecretMode.PADDED
    with pytest.raises(ValueError):
        ProxySecret(KEY, SecretMode.PLAIN, DOMAIN)


def test_links() -> None:
    secret = ProxySecret(KEY, SecretMode.PADDED)
    assert proxy_link("192.168.1.2", 443, secret) == (
        "tg://proxy?server=192.168.1.2&port=443&secret=dd000102030405060708090a0b0c0d0e0f"
    )
    assert proxy_link("[fd00::1]", 8443, secret, web=True).startswith(
        "https://t.me/proxy?server=fd00%3A%3A1&port=8443&secret=dd"
    )


# --- fake TLS -----------------------------------------------------------------------------

# A fixed vector, computed with tests/support/mtproxy_client.py (written from the protocol's
# description): the hello for KEY and DOMAIN at NOW, with a zero session id and key share.
VECTOR_SHA256 = "74a27dd96450313928f58049cfc61c84d42ea7313d739275dcc4fca78f83b760"
VECTOR_RANDOM = "9d62a590d4d1f3c972829bfbc2ad5bb532b8a5c9ee85886eb118a1a88ce0a1a6"


def vector_hello() -> bytes:
    return client_hello(KEY, DOMAIN, timestamp=NOW, session_id=bytes(32), key_share=bytes(32))


def test_vector_hello() -> None:
    hello = vector_hello()
    assert hashlib.sha256(hello).hexdigest() == VECTOR_SHA256
    assert len(hello) == 517 and hello[:3] == b"\x16\x03\x01"
    assert hello[11:43].hex() == VECTOR_RANDOM
    # The random, by the formula: HMAC-SHA256 of the hello with the random zeroed, its last
    # four bytes XORed with the time (little-endian).
    digest = hmac.digest(KEY, hello[:11] + bytes(32) + hello[43:], "sha256")
    clock = bytes(a ^ b for a, b in zip(digest[28:], hello[39:43], strict=True))
    assert hello[11:39] == digest[:28] and struct.unpack("<I", clock) == (NOW,)
    parsed = faketls.check_client_hello(hello, KEY, now=NOW, skew=60)
    assert parsed.timestamp == NOW
    assert parsed.session_id == bytes(32)
    assert parsed.random == hello[11:43]


def test_server_flight_proves_the_secret() -> None:
    hello = vector_hello()
    parsed = faketls.check_client_hello(hello, KEY, now=NOW, skew=60)
    flight = faketls.server_hello(KEY, parsed, urandom=counting(), key_share=bytes(32))
    size = server_flight_size(flight)
    assert size == len(flight)
    assert server_proof_ok(KEY, hello, flight)
    assert not server_proof_ok(bytes(16), hello, flight)
    records, rest = split_records(flight)
    assert rest == b""
    assert [kind for kind, _ in records] == [0x16, 0x14, 0x17]
    server_hello = records[0][1]
    assert server_hello[0] == 0x02  # ServerHello
    assert server_hello[4:6] == b"\x03\x03"
    assert server_hello[38] == 32 and server_hello[39:71] == bytes(32)  # session id echoed
    assert server_hello[71:73] == b"\x13\x01"
    assert records[1][1] == b"\x01"
    assert 1024 <= len(records[2][1]) < 4096


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("key", "not signed"),
        ("late", "clock"),
        ("early", "clock"),
        ("byte", "not signed"),
        ("truncated", "truncated"),
    ],
)
def test_hellos_refused(change: str, says: str) -> None:
    hello = vector_hello()
    key, now = KEY, NOW
    if change == "key":
        key = bytes(16)
    elif change == "late":
        now = NOW + 1201
    elif change == "early":
        now = NOW - 1201
    elif change == "byte":
        hello = hello[:200] + bytes([hello[200] ^ 1]) + hello[201:]
    elif change == "truncated":
        hello = hello[:300]
    with pytest.raises(faketls.HelloError, match=says):
        faketls.check_client_hello(hello, key, now=now, skew=1200)


def test_the_skew_window_is_inclusive() -> None:
    for now in (NOW - 1200, NOW + 1200):
        faketls.check_client_hello(vector_hello(), KEY, now=now, skew=1200)


def test_replays_are_refused() -> None:
    cache = faketls.ReplayCache(capacity=2, window=100)
    hello = vector_hello()
    faketls.check_client_hello(hello, KEY, now=NOW, skew=60, replays=cache)
    with pytest.raises(faketls.HelloError, match="replayed"):
        faketls.check_client_hello(hello, KEY, now=NOW + 1, skew=60, replays=cache)
    # The time is XORed into the random's last four bytes, outside the proof: a replay with
    # another time in them is still a replay.
    later = hello[:39] + bytes([hello[39] ^ 1]) + hello[40:]
    with pytest.raises(faketls.HelloError, match="replayed"):
        faketls.check_client_hello(later, KEY, now=NOW + 1, skew=60, replays=cache)
    assert cache.add(b"a", NOW) and cache.add(b"b", NOW)
    assert len(cache) == 2  # the capacity holds
    assert cache.add(b"a", NOW + 1000)  # past the window: forgotten (the clock refuses it)


def test_hello_length() -> None:
    assert faketls.hello_length(b"") is None
    assert faketls.hello_length(b"\x16\x03") is None
    assert faketls.hello_length(b"\x16\x03\x01\x02\x00") == 517
    for junk in (b"G", b"\x16\x02", b"\x17\x03\x03\x00\x10", b"\x16\x03\x01\xff\xff"):
        with pytest.raises(faketls.HelloError):
            faketls.hello_length(junk)


def test_records_round_trip_however_cut() -> None:
    data = bytes(range(256)) * 200  # 51200 bytes: four records
    wire = b"\x14\x03\x03\x00\x01\x01" + faketls.wrap_records(data)
    assert wire[6:] == application_records(data)  # the independent writer agrees
    for cut in (1, 5, 7, 1000, 16389):
        reader = faketls.RecordReader()
        out = b"".join(reader.feed(wire[i : i + cut]) for i in range(0, len(wire), cut))
        assert out == data and reader.pending == 0


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        (b"\x15\x03\x03\x00\x02\x02\x28", "type 21"),
        (b"\x17\x03\x01\x00\x01\x00", "version"),
        (b"\x17\x03\x03\xff\xff", "at most"),
        (b"\x14\x03\x03\x00\x02\x01\x01", "ChangeCipherSpec"),
    ],
)
def test_bad_records(wire: bytes, says: str) -> None:
    with pytest.raises(faketls.RecordError, match=says):
        faketls.RecordReader().feed(wire)


# --- which secret, which DC ---------------------------------------------------------------

PLAIN = ProxySecret(KEY, SecretMode.PLAIN)
PADDED = ProxySecret(bytes(range(16, 32)), SecretMode.PADDED)


def test_identify_finds_the_user() -> None:
    secrets = [("alice", PLAIN), ("bob", PADDED)]
    init, _ = initiate(Tag.PADDED, 2, secret=PADDED.key)
    user, secret, header, _ = identify(init, secrets)
    assert (user, secret, header.dc, header.tag) == ("bob", PADDED, 2, Tag.PADDED)
    init, _ = initiate(Tag.ABRIDGED, -4, secret=KEY)
    user, _, header, _ = identify(init, secrets)
    assert (user, header.dc, header.media) == ("alice", 4, True)


def test_identify_refuses() -> None:
    secrets = [("bob", PADDED)]
    unpadded, _ = initiate(Tag.INTERMEDIATE, 2, secret=PADDED.key)
    with pytest.raises(InitError, match="no secret"):
        identify(unpadded, secrets)  # dd: padded framing only
    other, _ = initiate(Tag.PADDED, 2, secret=bytes(16))
    with pytest.raises(InitError, match="no secret"):
        identify(other, secrets)
    with pytest.raises(InitError, match="64 bytes"):
        identify(other[:63], secrets)
    cache = faketls.ReplayCache()
    good, _ = initiate(Tag.PADDED, 2, secret=PADDED.key)
    identify(good, secrets, replays=cache)
    with pytest.raises(InitError, match="replayed"):
        identify(good, secrets, replays=cache)


def test_dc_addresses() -> None:
    def header(field: int) -> Header:
        return Header(Tag.PADDED, field)

    assert dc_address(header(2), DEFAULT_DCS) == "149.154.167.51"
    assert dc_address(header(-2), DEFAULT_DCS) == "149.154.167.151"
    assert dc_address(header(-3), DEFAULT_DCS) == "149.154.175.102"
    assert dc_address(header(dc_field(2, test=True)), DEFAULT_DCS) == "149.154.167.40"
    assert dc_address(header(0), DEFAULT_DCS) is None
    assert dc_address(header(77), DEFAULT_DCS) is None
    assert dc_address(header(2), DEFAULT_DCS, {2: "127.0.0.1:9"}) == "127.0.0.1:9"


@pytest.mark.parametrize("tag", list(Tag))
def test_length_guard_agrees_with_the_splitter(tag: Tag) -> None:
    from transports.mtproto import encode_packet

    stream = b"".join(encode_packet(tag, bytes(n * 4)) for n in (1, 126, 127, 300, 1))
    guard, splitter = LengthGuard(tag), PacketSplitter(tag)
    for i in range(0, len(stream), 3):
        guard.feed(stream[i : i + 3])
        splitter.feed(stream[i : i + 3])
    assert splitter.pending == 0 and guard._remaining == 0 and not guard._head
    too_big = struct.pack("<I", (2 << 20) + 4) if tag is not Tag.ABRIDGED else b"\x7f\xff\xff\xff"
    with pytest.raises(FramingError):
        LengthGuard(tag).feed(too_big)
    with pytest.raises(FramingError, match="empty"):
        LengthGuard(tag).feed(b"\x00\x00\x00\x00")


# --- the handshake, scripted --------------------------------------------------------------


def handshake(**secrets: ProxySecret) -> MTProtoHandshake:
    return MTProtoHandshake(secrets, clock=lambda: NOW, urandom=counting())


async def test_padded_client_is_accepted_and_reencrypted() -> None:
    init, client = initiate(Tag.PADDED, 2, secret=PADDED.key)
    payload = b"\x10\x00\x00\x00" + bytes(range(16))
    stream = ScriptedStream([init + client.encrypt(payload)])
    outcome = await handshake(bob=PADDED).accept(stream, 5)
    assert isinstance(outcome, Accepted) and outcome.user == "bob"
    view = ReencryptedStream(outcome.stream, outcome.obfuscation, outcome.header)
    flight = await view.read()  # detour's init toward the DC, then the client's bytes
    header, dc = accept(flight[:64])  # a plain obfuscated2 init, no secret: what a DC takes
    assert (header.tag, header.dc) == (Tag.PADDED, 2)
    assert dc.decrypt(flight[64:]) == payload
    answer = dc.encrypt(b"answer")
    view.write(answer)
    # The DC encrypts with the client's keystream: its bytes pass on as they are.
    assert bytes(stream.written) == answer
    assert client.decrypt(bytes(stream.written)) == b"answer"


async def test_fake_tls_client_is_accepted() -> None:
    secret = ProxySecret(KEY, SecretMode.FAKE_TLS, DOMAIN)
    hello = vector_hello()
    init, client = initiate(Tag.PADDED, -2, secret=KEY)
    body = init + client.encrypt(b"\x08\x00\x00\x00" + bytes(8))
    stream = ScriptedStream([hello, b"\x14\x03\x03\x00\x01\x01" + application_records(body)])
    outcome = await handshake(carol=secret).accept(stream, 5)
    assert isinstance(outcome, Accepted) and outcome.user == "carol"
    assert outcome.header.media and outcome.header.dc == 2
    flight = bytes(stream.written)
    assert server_proof_ok(KEY, hello, flight)
    assert isinstance(outcome.stream, FakeTlsStream)
    rest = await outcome.stream.read()
    assert outcome.obfuscation.decrypt(rest) == b"\x08\x00\x00\x00" + bytes(8)
    outcome.stream.write(outcome.obfuscation.encrypt(b"hi"))
    records, _ = split_records(bytes(stream.written[len(flight) :]))
    assert [kind for kind, _ in records] == [0x17]
    assert client.decrypt(records[0][1]) == b"hi"


@pytest.mark.parametrize(
    ("first", "says"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(64), "no secret"),
        (bytes(63), "ended before"),
        (b"\x16\x03\x01\x00\x10" + bytes(16), "a handshake record of 16 bytes"),
        (b"\x16\x03\x01\x02\x00" + bytes(100), "ended before"),
    ],
)
async def test_not_clients_are_refused_with_what_they_sent(first: bytes, says: str) -> None:
    secret = ProxySecret(KEY, SecretMode.FAKE_TLS, DOMAIN)
    outcome = await handshake(alice=PLAIN, carol=secret).accept(ScriptedStream([first]), 5)
    assert isinstance(outcome, Refused) and says in outcome.reason
    assert outcome.seen == first


async def test_a_replayed_hello_is_refused() -> None:
    secret = ProxySecret(KEY, SecretMode.FAKE_TLS, DOMAIN)
    shake = handshake(carol=secret)
    init, _ = initiate(Tag.PADDED, 2, secret=KEY)
    script = [vector_hello(), application_records(init)]
    assert isinstance(await shake.accept(ScriptedStream(script), 5), Accepted)
    again = await shake.accept(ScriptedStream(script), 5)
    assert isinstance(again, Refused) and "replayed" in again.reason
    assert again.seen == vector_hello()[: len(again.seen)]


# --- links ----------------------------------------------------------------------------------


def mt_config(listen: str, host: str | None = None):
    from helper.config import parse_config

    extra = f'host = "{host}"\n' if host else ""
    text = (
        f'[mtproto_proxy]\nlisten = "{listen}"\n{extra}'
        'secrets = { alice = "dd000102030405060708090a0b0c0d0e0f" }\n'
        '[[route]]\nname = "direct"\nchain = "direct"\n'
    )
    config = parse_config(text, "t.toml").mtproto_proxy
    assert config is not None
    return config


def test_links_say_where_apps_connect() -> None:
    from helper.proxy.mtproto_links import proxy_links

    (link,) = proxy_links(mt_config("192.168.1.2:443"))
    assert (link.user, link.mode, link.host, link.port) == ("alice", "dd", "192.168.1.2", 443)
    assert link.link() == "tg://proxy?server=192.168.1.2&port=443&secret=***"
    assert link.link(reveal=True).endswith("secret=dd000102030405060708090a0b0c0d0e0f")
    assert link.link(web=True).startswith("https://t.me/proxy?server=192.168.1.2&port=443&")
    # Every address: this machine's LAN address; a running endpoint: the port it has.
    (link,) = proxy_links(mt_config("0.0.0.0:0"), ("0.0.0.0", 4321), lan_address=lambda: "10.0.0.7")
    assert (link.host, link.port) == ("10.0.0.7", 4321)
    (link,) = proxy_links(mt_config("0.0.0.0:443", host="proxy.example.org"))
    assert link.host == "proxy.example.org"


def test_the_links_command(tmp_path, capsys) -> None:
    from helper.cli import main

    path = tmp_path / "mt.toml"
    path.write_text(
        '[mtproto_proxy]\nlisten = "192.168.1.2:443"\n'
        'secrets = { alice = "dd000102030405060708090a0b0c0d0e0f" }\n'
    )
    assert main(["mtproto", "links", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tg://proxy?server=192.168.1.2&port=443&secret=***" in out
    assert "000102" not in out and "--show-secrets" in out
    assert main(["mtproto", "links", "-c", str(path), "--show-secrets"]) == 0
    out = capsys.readouterr().out
    assert "https://t.me/proxy?server=192.168.1.2&port=443&secret=dd000102" in out
    assert main(["mtproto", "links"]) == 2  # the built-in config has no endpoint
    assert "no [mtproto_proxy]" in capsys.readouterr().err


def test_the_secret_command(capsys) -> None:
    from helper.cli import main

    assert main(["mtproto", "secret"]) == 0
    assert parse_secret(capsys.readouterr().out.strip()).mode is SecretMode.PADDED
    assert main(["mtproto", "secret", "--tls", "www.example.org"]) == 0
    assert parse_secret(capsys.readouterr().out.strip()).domain == "www.example.org"
    assert main(["mtproto", "secret", "--plain"]) == 0
    assert parse_secret(capsys.readouterr().out.strip()).mode is SecretMode.PLAIN
    assert main(["mtproto", "secret", "--tls", "not a name"]) == 2


# --- the relay's fast path, without sockets ----------------------------------------------------


class RelayLeg(asyncio.BufferedProtocol):
    """Stands for the relay's fast-path protocol: a buffer of its own, what it was given."""

    def __init__(self) -> None:
        self.buffer = memoryview(bytearray(256 * 1024))
        self.got = bytearray()
        self.eof = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buffer[:nbytes]

    def eof_received(self) -> bool:
        self.eof = True
        return True


class Transport:
    def __init__(self) -> None:
        self.aborted = False
        self.protocol: asyncio.BaseProtocol | None = None
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default=None):
        return default

    def abort(self) -> None:
        self.aborted = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def writelines(self, pieces) -> None:
        self.written.append(b"".join(bytes(p) for p in pieces))


def arrive(protocol: asyncio.BufferedProtocol, data: bytes, cut: int) -> None:
    """`data` delivered as a transport would, `cut` bytes at a time."""
    for start in range(0, len(data), cut):
        piece = data[start : start + cut]
        buffer = protocol.get_buffer(len(piece))
        buffer[: len(piece)] = piece
        protocol.buffer_updated(len(piece))


async def fake_tls_view() -> tuple[ReencryptedStream, FakeTlsStream, object]:
    secret = ProxySecret(KEY, SecretMode.FAKE_TLS, DOMAIN)
    init, client = initiate(Tag.INTERMEDIATE, 2, secret=KEY)
    stream = ScriptedStream([vector_hello(), application_records(init)])
    outcome = await handshake(carol=secret).accept(stream, 5)
    assert isinstance(outcome, Accepted) and isinstance(outcome.stream, FakeTlsStream)
    return (
        ReencryptedStream(outcome.stream, outcome.obfuscation, outcome.header),
        outcome.stream,
        client,
    )


@pytest.mark.parametrize("cut", [1, 7, 5000, 1 << 20])
async def test_the_fast_path_parses_records_and_reencrypts_in_any_cuts(cut: int) -> None:
    view, records, client = await fake_tls_view()
    transport, relay = Transport(), RelayLeg()
    socket_like = _ReencryptingSocket(view, None, records)
    wrapped = _ReencryptingTransport(transport, view, records.records)  # type: ignore[arg-type]
    wrapped.set_protocol(relay)
    payload = bytes(range(256)) * 300
    packet = struct.pack("<I", len(payload)) + payload
    wire = b"\x14\x03\x03\x00\x01\x01" + application_records(client.encrypt(packet))
    arrive(transport.protocol, wire, cut)  # type: ignore[arg-type]
    header, dc = accept(view.init)  # what the DC makes of detour's init, then of the bytes
    assert header.dc == 2 and dc.decrypt(bytes(relay.got)) == packet
    assert not transport.aborted and socket_like.records is records
    # What the relay writes goes out as records, the bytes unchanged inside.
    wrapped.write(b"x" * 20000)
    assert split_records(transport.written[0])[0] == [(0x17, b"x" * 16384), (0x17, b"x" * 3616)]


async def test_the_fast_path_resets_a_client_that_breaks_its_records() -> None:
    view, records, _ = await fake_tls_view()
    transport, relay = Transport(), RelayLeg()
    _ReencryptingTransport(transport, view, records.records).set_protocol(relay)  # type: ignore[arg-type]
    arrive(transport.protocol, b"\x16\x03\x03\x00\x10" + bytes(16), 3)  # type: ignore[arg-type]
    assert transport.aborted and not relay.got


async def test_the_fast_path_resets_a_client_that_ends_inside_a_record() -> None:
    view, records, client = await fake_tls_view()
    transport, relay = Transport(), RelayLeg()
    _ReencryptingTransport(transport, view, records.records).set_protocol(relay)  # type: ignore[arg-type]
    record = application_records(client.encrypt(struct.pack("<I", 96) + bytes(96)))
    arrive(transport.protocol, record[:50], 50)  # type: ignore[arg-type]
    assert not transport.aborted and len(relay.got) == 45
    transport.protocol.eof_received()  # type: ignore[union-attr]
    assert transport.aborted and not relay.eof
