"""The `mtproxy:` layer without sockets: the client handshake (transports/mtproto/client.py)
checked by detour's own server side (faketls.py, proxy.py) and against the published
ClientHello snapshots test_faketls_vectors.py uses; the re-framing between a client's
framing and padded intermediate; the stream over an in-memory connection; the links and
config that make the route, with the secret kept out of everything shown."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from pathlib import Path

import pytest

from helper.add_command import plan_addition
from helper.config import load_config, secrets_held
from helper.probe.diagnose import phrase
from helper.probe.result import TargetResult
from tests.unit.test_faketls_vectors import GOOD
from transports import DialError, Endpoint, Failure, Op
from transports.base import Stream
from transports.chain import ChainError, parse_chain
from transports.links import LinkError, recognise_link
from transports.mtproto import faketls
from transports.mtproto import messages as tl
from transports.mtproto.client import HELLO_LEN, Reframer, client_hello, server_flight, unpad
from transports.mtproto.faketls import HelloError
from transports.mtproto.framing import FramingError, PacketReader, encode_packet
from transports.mtproto.obfuscated2 import Tag, initiate
from transports.mtproto.proxy import identify
from transports.mtproto.secret import parse_secret
from transports.mtproxy import MTProxyDialer, MTProxyStream, parse_options

KEY = bytes(range(16))
PLAIN, DD = KEY.hex(), "dd" + KEY.hex()
EE = "ee" + KEY.hex() + b"example.com".hex()
DC2 = "149.154.167.51"  # DC 2 in the built-in table


def extensions(handshake: bytes) -> list[int]:
    """The extension types of a ClientHello handshake message, in order."""
    pos = 4 + 2 + 32
    pos += 1 + handshake[pos]
    pos += 2 + int.from_bytes(handshake[pos : pos + 2], "big")
    pos += 1 + handshake[pos]
    end = pos + 2 + int.from_bytes(handshake[pos : pos + 2], "big")
    pos += 2
    kinds = []
    while pos < end:
        kind, length = struct.unpack_from(">HH", handshake, pos)
        kinds.append(kind)
        pos += 4 + length
    assert pos == end == len(handshake)
    return kinds


def _sni(handshake: bytes) -> bytes:
    at = handshake.index(b"\x00\x00", 4 + 2 + 32 + 33)  # the server_name extension
    while True:
        length = int.from_bytes(handshake[at + 2 : at + 4], "big")
        name_len = int.from_bytes(handshake[at + 7 : at + 9], "big")
        if length == name_len + 5:
            return handshake[at + 9 : at + 9 + name_len]
        at = handshake.index(b"\x00\x00", at + 1)


# --- the ClientHello --------------------------------------------------------------------


def test_the_hello_passes_detours_own_check_and_carries_the_time() -> None:
    now = time.time()
    hello = client_hello(KEY, "example.com", now=now)
    checked = faketls.check_client_hello(hello, KEY, now=now, skew=2)
    assert checked.timestamp == int(now) and len(checked.session_id) == 32
    with pytest.raises(HelloError, match="not signed"):
        faketls.check_client_hello(hello, os.urandom(16), now=now, skew=2)
    with pytest.raises(HelloError, match="clock"):
        faketls.check_client_hello(hello, KEY, now=now + 600, skew=120)


def test_the_hello_has_the_published_format() -> None:
    hello = client_hello(KEY, "storage.googleapis.com", now=time.time())
    published = [base64.b64decode(vector[3]) for vector in GOOD]
    assert len(hello) == HELLO_LEN == 5 + len(published[0])
    # What mtprotoproxy checks byte for byte, and the snapshots start with.
    assert hello[:11] == b"\x16\x03\x01\x02\x00" + published[0][:6]
    ours = set(extensions(hello[5:]))
    for message in published:
        theirs = {kind for kind in extensions(message) if kind & 0x0F0F != 0x0A0A}  # no GREASE
        assert theirs - {0x3374} <= ours  # (0x3374: an old draft extension Telegram dropped)
    assert _sni(hello[5:]) == b"storage.googleapis.com"
    assert extensions(hello[5:])[-1] == 0x15  # padding last, filling to 517 bytes


def test_a_long_domain_still_makes_a_signed_hello() -> None:
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    hello = client_hello(KEY, domain, now=1000.0)
    assert len(hello) > HELLO_LEN and _sni(hello[5:]) == domain.encode()
    faketls.check_client_hello(hello, KEY, now=1000.0, skew=1)


def test_the_servers_flight_is_checked() -> None:
    hello = client_hello(KEY, "example.com", now=time.time())
    checked = faketls.check_client_hello(hello, KEY, now=time.time(), skew=5)
    flight = faketls.server_hello(KEY, checked)
    for cut in (0, 3, 5, 80, len(flight) - 1):
        assert server_flight(KEY, hello, flight[:cut]) is None
    assert server_flight(KEY, hello, flight + b"\x17\x03\x03") == len(flight)
    with pytest.raises(HelloError, match="not signed"):
        server_flight(os.urandom(16), hello, flight)
    forged = faketls.server_hello(os.urandom(16), checked)
    with pytest.raises(HelloError, match="not signed"):
        server_flight(KEY, hello, forged)
    with pytest.raises(HelloError, match="no TLS"):
        server_flight(KEY, hello, b"HTTP/1.1 400 Bad Request\r\n")
    ccs = flight.index(b"\x14\x03\x03\x00\x01\x01")
    with pytest.raises(HelloError, match="type 22"):
        server_flight(KEY, hello, flight[:ccs] + b"\x16" + flight[ccs + 1 :])


# --- re-framing ---------------------------------------------------------------------------


def test_unpad_finds_the_message_inside_the_padding() -> None:
    plain = tl.unencrypted(tl.req_pq_multi(os.urandom(16)), tl.message_id())
    encrypted = bytes(8) + os.urandom(16) + os.urandom(16 * 5)
    encrypted = b"\x01" + encrypted[1:]
    error = struct.pack("<i", -404)
    for message in (plain, encrypted, error):
        for padding in range(16):
            assert unpad(message + os.urandom(padding)) == message


@pytest.mark.parametrize("tag", [Tag.ABRIDGED, Tag.INTERMEDIATE])
def test_reframing_to_padded_and_back(tag: Tag) -> None:
    messages = [tl.unencrypted(tl.req_pq_multi(os.urandom(16)), tl.message_id()) for _ in range(3)]
    messages.append(b"\x01" * 8 + os.urandom(16 + 4096))
    stream = b"".join(encode_packet(tag, m) for m in messages)
    up = Reframer(tag, Tag.PADDED)
    padded = b"".join(up.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert [unpad(p) for p in PacketReader(Tag.PADDED).feed(padded)] == messages
    down = Reframer(Tag.PADDED, tag)
    back = down.feed(padded)
    assert PacketReader(tag).feed(back) == messages and not down.pending


def test_reframing_refuses_impossible_lengths() -> None:
    with pytest.raises(FramingError):
        Reframer(Tag.INTERMEDIATE, Tag.PADDED).feed(struct.pack("<I", 1 << 30))


# --- the stream over an in-memory connection ----------------------------------------------


class Pipe(Stream):
    """The proxy's end, in memory: what the layer wrote, and what the test has it read."""

    def __init__(self) -> None:
        self.on_write = None  # called after each write (a fake-TLS proxy's answer)
        self.written = bytearray()
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.eof = self.aborted = False

    async def read(self, n: int = 65536) -> bytes:
        return await self.incoming.get()

    def unread(self, data: bytes) -> None:
        raise NotImplementedError

    def write(self, data) -> None:
        self.written += data
        if self.on_write is not None:
            self.on_write()

    async def drain(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    async def wait_closed(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.aborted


class Inner:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.dialed: list[Endpoint] = []

    async def dial(self, target: Endpoint) -> Pipe:
        self.dialed.append(target)
        return self.pipe


class FakeTlsProxy:
    """Answers the layer's ClientHello as a fake-TLS proxy with `key` would."""

    def __init__(self, pipe: Pipe, key: bytes) -> None:
        self.pipe, self.key = pipe, key
        pipe.on_write = self.written

    def written(self) -> None:
        if len(self.pipe.written) < HELLO_LEN:
            return
        record = bytes(self.pipe.written[:HELLO_LEN])
        try:
            hello = faketls.check_client_hello(record, self.key, now=time.time(), skew=5)
        except HelloError:  # a website's TLS answers, with a random of its own
            hello = faketls.ClientHello(record[11:43], record[44:76], 0)
        del self.pipe.written[:HELLO_LEN]
        self.pipe.on_write = None
        self.pipe.incoming.put_nowait(faketls.server_hello(self.key, hello))


async def open_stream(secret: str, proxy_key: bytes | None = None) -> tuple[MTProxyStream, Pipe]:
    pipe = Pipe()
    options = parse_options(f"192.0.2.9:443;secret={secret}")
    dialer = MTProxyDialer(Inner(pipe), options)  # type: ignore[arg-type]
    if secret.startswith("ee"):
        FakeTlsProxy(pipe, proxy_key or KEY)
    return await dialer.dial(Endpoint(DC2, 443)), pipe


def proxy_side(pipe: Pipe, secret: str) -> tuple[bytes, Tag, int, object]:
    """What the proxy reads: the init (opened with its secret) and the plaintext after."""
    wire = bytes(pipe.written)
    if secret.startswith("ee"):
        wire = faketls.RecordReader().feed(wire)
    _, _, header, ob = identify(wire[:64], [("u", parse_secret(secret))])
    return ob.decrypt(wire[64:]), header.tag, header.dc, ob


@pytest.mark.parametrize(
    ("secret", "tag"), [(PLAIN, Tag.ABRIDGED), (DD, Tag.PADDED), (EE, Tag.PADDED)]
)
async def test_an_obfuscated_client_is_re_encrypted_for_the_proxy(secret: str, tag: Tag) -> None:
    stream, pipe = await open_stream(secret)
    init, client = initiate(Tag.ABRIDGED, 0)
    request = tl.unencrypted(tl.req_pq_multi(os.urandom(16)), tl.message_id())
    sent = init + client.encrypt(encode_packet(Tag.ABRIDGED, request))
    stream.write(sent[:30])  # the init in pieces
    assert pipe.written == b""  # nothing before the whole init
    stream.write(sent[30:])
    plain, seen_tag, dc, ob = proxy_side(pipe, secret)
    assert (seen_tag, dc) == (tag, 2)
    assert [unpad(p) for p in PacketReader(tag).feed(plain)] == [request]
    assert init[8:56] not in bytes(pipe.written)  # the two streams share no key material
    answer = tl.unencrypted(b"\x63\x24\x16\x05" + os.urandom(40), tl.message_id())
    down = ob.encrypt(encode_packet(tag, answer))  # type: ignore[attr-defined]
    pipe.incoming.put_nowait(faketls.wrap_records(down) if secret.startswith("ee") else down)
    got = client.decrypt(await stream.read())
    assert PacketReader(Tag.ABRIDGED).feed(got) == [answer]


async def test_a_clear_intermediate_client_and_its_half_close() -> None:
    stream, pipe = await open_stream(DD)
    request = os.urandom(40)
    stream.write(b"\xee\xee\xee\xee" + encode_packet(Tag.INTERMEDIATE, request))
    plain, tag, _, _ = proxy_side(pipe, DD)
    assert tag is Tag.PADDED and unpad(PacketReader(Tag.PADDED).feed(plain)[0]) == request
    stream.write_eof()
    assert pipe.eof


@pytest.mark.parametrize(
    ("first", "said"),
    [
        (struct.pack("<II", 40, 0), "full transport"),
        (b"GET / HTTP/1.1\r\n", "HTTP"),
        (b"\x16\x03\x01\x02\x00", "TLS"),
    ],
)
async def test_what_is_no_mtproto_is_reset_and_nothing_sent(first: bytes, said: str) -> None:
    stream, pipe = await open_stream(PLAIN)
    with pytest.raises(ConnectionResetError, match=said):
        stream.write(first)
    assert pipe.written == b"" and pipe.aborted


async def test_a_proxy_that_closes_unanswered_is_named() -> None:
    stream, pipe = await open_stream(DD)
    stream.write(b"\xef" + encode_packet(Tag.ABRIDGED, os.urandom(40)))
    pipe.incoming.put_nowait(b"")
    with pytest.raises(DialError) as caught:
        await stream.read()
    assert caught.value.failure is Failure.EOF
    assert caught.value.detail.startswith("MTProto proxy 192.0.2.9:443 closed the connection")
    assert KEY.hex() not in caught.value.detail


async def test_a_website_instead_of_the_proxy_fails_the_dial_naming_it() -> None:
    with pytest.raises(DialError) as caught:
        await open_stream(EE, proxy_key=os.urandom(16))
    assert caught.value.failure is Failure.PROXY_PROTOCOL_ERROR
    assert caught.value.op is Op.PROXY_HANDSHAKE
    detail = caught.value.detail
    assert detail.startswith("MTProto proxy 192.0.2.9:443 answered as a website")
    target = TargetResult("mtproto://x:443").fail(caught.value.failure, caught.value.op, detail)
    assert phrase(target) == detail  # the probe's diagnosis names the proxy


async def test_only_dc_addresses_are_carried() -> None:
    dialer = MTProxyDialer(Inner(Pipe()), parse_options(f"192.0.2.9:443;secret={DD}"))  # type: ignore[arg-type]
    assert "not an address of Telegram" in (dialer.not_applicable(Endpoint("1.1.1.1", 443)) or "")
    with pytest.raises(DialError) as caught:
        await dialer.dial(Endpoint("web.whatsapp.com", 443))
    assert caught.value.failure is Failure.NOT_APPLICABLE


# --- links, config, secrets -----------------------------------------------------------------

B64 = base64.b64encode(b"\xdd" + bytes(range(250, 256)) + bytes(10)).decode()  # holds '+', '/'


@pytest.mark.parametrize(
    ("link", "server", "mode"),
    [
        (f"tg://proxy?server=192.0.2.7&port=443&secret={PLAIN}", "192.0.2.7:443", "plain"),
        (f"https://t.me/proxy?server=p.example&port=8443&secret={DD}", "p.example:8443", "dd"),
        (f"tg://proxy?server=2001:db8::7&port=443&secret={EE}", "[2001:db8::7]:443", "ee"),
        (f"tg://proxy?port=443&server=192.0.2.7&secret={B64}", "192.0.2.7:443", "dd"),
    ],
)
def test_proxy_links_become_mtproxy_routes_for_telegram(
    tmp_path: Path, link: str, server: str, mode: str
) -> None:
    found = recognise_link(link)
    assert found.kind == "mtproxy" and found.chain.startswith(f"mtproxy:{server};secret=")
    options = parse_chain(found.chain).layers[-1].params["options"]
    assert str(options.server) == server and options.secret.mode.value == mode
    for secret in (KEY.hex(), B64.replace("+", " ")):
        assert secret not in found.shown and secret not in repr(found)
    path = tmp_path / "d.toml"
    addition = plan_addition("", path, link)
    assert addition.service == "telegram"
    assert KEY.hex() not in addition.shown_block and B64 not in addition.shown_block
    path.write_text(addition.text)
    config = load_config(path)
    assert secrets_held(config) == [f"route {found.name!r} MTProto proxy secret"]
    route = next(r for r in config.routes if r.name == found.name)
    assert KEY.hex() not in str(route.chain) and "secret=" in str(route.chain)


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("tg://proxy?server=x.example&port=443&secret=dd00", "secret: 2 bytes is no proxy secret"),
        ("tg://proxy?server=x.example&secret=" + DD, "the port is missing"),
        ("tg://proxy?port=443&secret=" + DD, "names no server"),
        ("tg://proxy?server=x.example&port=443", "the secret is missing"),
        ("tg://proxy?server=x.example&port=70000&secret=" + DD, "out of range"),
        ("tg://proxy?server=x.example&port=0&secret=" + DD, "port 0 is out of range"),
        ("tg://proxy?server=a|b&port=1&secret=" + DD, "holds characters"),
    ],
)
def test_bad_proxy_links_say_why_without_the_secret(link: str, message: str) -> None:
    with pytest.raises(LinkError) as caught:
        recognise_link(link)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert KEY.hex() not in str(caught.value)


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("mtproxy:192.0.2.7:443", "mtproxy: secret= is missing"),
        (f"mtproxy:192.0.2.7;secret={DD}", "mtproxy: the proxy's address"),
        (f"mtproxy:192.0.2.7:443;secret={DD[:-2]}zz", "mtproxy: secret:"),
        (f"mtproxy:192.0.2.7:443;secret={DD};key=1", "unknown option 'key'"),
        ("mtproxy", "write mtproxy layers as"),
        (f"mtproxy:192.0.2.7:443;secret={DD} | tgws", "mtproxy must be the last layer"),
    ],
)
def test_config_check_refuses_bad_layers_naming_the_key(chain: str, message: str) -> None:
    with pytest.raises(ChainError) as caught:
        parse_chain(chain)
    assert message in str(caught.value) and KEY.hex() not in str(caught.value)


def test_the_layer_shows_its_kind_never_its_secret() -> None:
    for secret, shown in ((PLAIN, "***"), (DD, "dd***"), (EE, "ee***")):
        chain = parse_chain(f"socks5://127.0.0.1:1080 | mtproxy:192.0.2.7:443;secret={secret}")
        assert str(chain).endswith(f"mtproxy:192.0.2.7:443;secret={shown}")
        assert KEY.hex() not in repr(chain.layers[-1].params)


@pytest.mark.parametrize(
    ("answer", "failure", "said"),
    [
        (b"", Failure.EOF, "closed the connection after the fake-TLS ClientHello"),
        (None, Failure.TIMEOUT, "did not answer the fake-TLS ClientHello within 0.05s"),
    ],
)
async def test_an_ee_proxy_that_closes_or_stays_silent(answer, failure, said) -> None:
    pipe = Pipe()
    if answer is not None:
        pipe.incoming.put_nowait(answer)
    options = parse_options(f"192.0.2.9:443;secret={EE}")
    dialer = MTProxyDialer(Inner(pipe), options, handshake_timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(DialError) as caught:
        await dialer.dial(Endpoint(DC2, 443))
    assert caught.value.failure is failure and said in caught.value.detail
    assert pipe.aborted and len(pipe.written) == HELLO_LEN
