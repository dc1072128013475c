"""Property tests for what detour reads back from the machines a route goes through: the
replies of upstream SOCKS5, SOCKS4a and HTTP CONNECT proxies, and the answer to the
WebSocket upgrade a `front:` route sends through a CDN. A broken or hostile upstream can
answer anything; for every answer, however it is chunked:

- the dial gives a Stream or a DialError whose detail is a printable sentence; nothing else
  (no ValueError, IndexError, UnicodeError, ...) escapes;
- a valid reply gives a Stream positioned at the first byte after the reply;
- a valid reply mutated byte by byte still gives one of the two.

Each dial runs against a scripted inner stream on one event loop the module's properties
share (dial_through_proxy needs one for its timeout), all of an example's dials in one run
of it; an example is two draws (a fixed-size one for the valid reply, the bytes after it,
the split points and the edits; one for the random bytes), so 10,000 examples take seconds.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Callable
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.loops import example_loop_fixture, run_example  # noqa: F401 - a fixture
from tests.fuzz.strategies import Choices, mutate
from tests.unit.scripted import ScriptedStream
from transports.base import DialError, Endpoint, Stream
from transports.http_connect import HttpConnectDialer
from transports.socks import Socks4aDialer, Socks5Dialer
from transports.websocket import WebSocketStream, accept_key, websocket_connect

PROXY = Endpoint("192.0.2.1", 1080)
TARGET = Endpoint("web.telegram.org", 443)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ScriptedDialer:
    """An inner dialer whose every dial returns the one scripted stream."""

    def __init__(self, stream: ScriptedStream) -> None:
        self.stream = stream

    async def dial(self, target: Endpoint) -> Stream:
        return self.stream


def chunked(data: bytes, cuts: bytes) -> list[bytes]:
    bounds = sorted({0, len(data), *(c * len(data) // 256 for c in cuts)})
    return [data[a:b] for a, b in pairwise(bounds)]


async def settle(coro) -> Stream | DialError:
    try:
        return await coro
    except DialError as exc:
        return exc


def checked(result: Stream | DialError) -> Stream | DialError:
    """A dial's Stream or DialError (any other exception has failed the property already)."""
    if isinstance(result, DialError):
        assert result.detail and not CONTROL.search(result.detail), repr(result)
    else:
        assert isinstance(result, Stream)
    return result


def outcome(loop: asyncio.AbstractEventLoop, coro) -> Stream | DialError:
    return checked(run_example(loop, settle(coro)))


# --- valid replies, written from the RFCs -------------------------------------------------

SOCKS5_ADDRESSES = [
    b"\x01" + bytes(4),  # ATYP IPv4 0.0.0.0
    b"\x04" + bytes(16),  # ATYP IPv6 ::
    b"\x03\x09proxy.lan",  # ATYP DOMAIN len name
]


def socks5_reply(c: Choices) -> bytes:
    auth = c.chance(50)
    method = b"\x05\x02" if auth else b"\x05\x00"  # VER METHOD
    login = b"\x01\x00" if auth else b""  # RFC 1929: VER STATUS=success
    return method + login + b"\x05\x00\x00" + c.pick(SOCKS5_ADDRESSES) + struct.pack("!H", 4321)


def http_reply(c: Choices) -> bytes:
    status = c.pick([b"200 Connection established", b"200 OK", b"204 Fine"])
    header = c.pick([b"", b"Proxy-Agent: tinyproxy/1.11\r\n", b"Via: 1.1 squid\r\n"])
    return b"HTTP/1." + c.pick([b"1", b"0"]) + b" " + status + b"\r\n" + header + b"\r\n"


def parts(head: bytes, limits: tuple[int, ...]) -> list[bytes]:
    """Pieces of a fixed-size draw: one length byte per piece, then room for each piece at
    its limit; a piece is any bytes up to its limit."""
    pieces, at = [], len(limits)
    for i, limit in enumerate(limits):
        pieces.append(head[at : at + head[i] % (limit + 1)])
        at += limit
    return pieces


def fixed_size(limits: tuple[int, ...]) -> int:
    return len(limits) + sum(limits)


def with_junk(limits: tuple[int, ...], junk: int) -> st.SearchStrategy[tuple[list[bytes], bytes]]:
    """(the pieces of a fixed-size draw, random bytes up to `junk` long): two draws per
    example, where one draw per piece made hypothesis most of a property's time."""
    size = fixed_size(limits)
    return st.tuples(
        st.binary(min_size=size, max_size=size).map(lambda head: parts(head, limits)),
        st.binary(max_size=junk),
    )


REPLY_PARTS = (8, 16, 6, 15)  # reply choices, bytes after it, split points, edits


def replies(build) -> st.SearchStrategy[tuple[bytes, bytes, bytes, bytes, bytes]]:
    """(valid reply, bytes after it, split points, random bytes up to 300, edits: 3 to 15
    bytes). The reply is built from its 8 choice bytes (Choices reads zeros past the end,
    so fewer bytes are a reply these make too)."""

    def example(drawn: tuple[list[bytes], bytes]) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        (choices, trailing, cuts, edits), junk = drawn
        return build(Choices(choices)), trailing, cuts, junk, edits.ljust(3, b"\0")

    return with_junk(REPLY_PARTS, 300).map(example)


def check_dialer(loop: asyncio.AbstractEventLoop, make: Callable, example) -> None:
    """The valid reply gives a Stream with the bytes after the reply left on it; random
    bytes and the mutated reply give a Stream or a DialError. One loop run for all four."""
    valid, trailing, cuts, junk, edits = example
    stream = ScriptedStream(chunked(valid + trailing, cuts))
    mutated = mutate(valid, edits)
    scripts = [
        stream,
        *(ScriptedStream(chunked(a, cuts)) for a in (junk, mutated, mutated + trailing)),
    ]

    async def dials() -> list[Stream | DialError]:
        return [await settle(make(ScriptedDialer(script)).dial(TARGET)) for script in scripts]

    first, *_ = [checked(result) for result in run_example(loop, dials())]
    assert isinstance(first, Stream), first
    assert stream.remaining() == trailing


def _prop_socks5_replies(loop: asyncio.AbstractEventLoop, example) -> None:
    """A SOCKS5 proxy's replies (with and without a login): check_dialer's properties."""
    auth = example[0][1] == 0x02  # the proxy chose user/password: the dialer has a login
    login = ("alice", "s3cret") if auth else (None, None)
    check_dialer(loop, lambda inner: Socks5Dialer(inner, PROXY, *login), example)


def _prop_socks4a_replies(loop: asyncio.AbstractEventLoop, example) -> None:
    """A SOCKS4a proxy's replies: check_dialer's properties."""
    check_dialer(loop, lambda inner: Socks4aDialer(inner, PROXY), example)


def _prop_http_connect_replies(loop: asyncio.AbstractEventLoop, example) -> None:
    """An HTTP CONNECT proxy's replies: check_dialer's properties."""
    check_dialer(loop, lambda inner: HttpConnectDialer(inner, PROXY, "alice", "s3cret"), example)


def test_http_status_in_other_scripts_is_a_dial_error(example_loop) -> None:
    """Regression: the head is read as latin-1, where b'\\xb2' is '²', a digit to
    str.isdigit() but not to int(): a proxy answering 'HTTP/1.1 \\xb2 x' made int() raise
    ValueError out of the dialer."""
    for status in (b"\xb2", b"\xb9\xb3", b"20\xb3"):
        reply = b"HTTP/1.1 " + status + b" x\r\n\r\n"
        dialer = HttpConnectDialer(ScriptedDialer(ScriptedStream([reply])), PROXY)
        assert isinstance(outcome(example_loop, dialer.dial(TARGET)), DialError)


# --- the WebSocket upgrade answer ---------------------------------------------------------


class UpgradeServer(ScriptedStream):
    """Answers the upgrade request it is written with `template`, `{accept}` replaced by the
    key's proper Sec-WebSocket-Accept, so valid answers (and mutations of them) get past the
    key check."""

    def __init__(self, template: bytes, cuts: bytes) -> None:
        super().__init__()
        self.template, self.cuts = template, cuts

    def write(self, data: bytes) -> None:
        super().write(data)
        found = re.search(rb"Sec-WebSocket-Key: (\S+)", bytes(self.written))
        if found and self.template:
            accept = accept_key(found.group(1).decode()).encode()
            answer, self.template = self.template.replace(b"{accept}", accept), b""
            self.chunks.extend(chunk for chunk in chunked(answer, self.cuts) if chunk)


UPGRADE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: {accept}\r\n\r\n"
)


async def upgrade(server: UpgradeServer) -> Stream:
    return await websocket_connect(server, "relay.test", "/ws", timeout=5)


async def upgrades(servers: list[UpgradeServer]) -> list[Stream | DialError]:
    return [checked(await settle(upgrade(server))) for server in servers]


def _prop_websocket_upgrade_answers(loop: asyncio.AbstractEventLoop, drawn) -> None:
    """The valid answer gives a WebSocketStream with the bytes after it left on the stream;
    random bytes and the mutated answer give a stream or a DialError. One loop run for the
    three."""
    (trailing, cuts, edits), junk = drawn
    server = UpgradeServer(UPGRADE + trailing, cuts)
    others = [UpgradeServer(template or b"x", cuts) for template in (junk, mutate(UPGRADE, edits))]
    result, *_ = run_example(loop, upgrades([server, *others]))
    assert isinstance(result, WebSocketStream), result
    assert server.remaining() == trailing


# --- the properties above, in one test ------------------------------------------------------
#
# Hypothesis' own work for an example costs more than most of these checks, and CI runs
# 10,000 examples of each test: the three proxies' replies and the upgrade answer share a
# test, and so hypothesis' work, each with its own input drawn as it was when it had a test
# of its own, on the module's one loop as before.


@given(
    socks5=replies(socks5_reply),
    socks4a=replies(lambda c: b"\x00\x5a" + bytes(6)),  # VN=0 CD=granted DSTPORT DSTIP
    http=replies(http_reply),
    # bytes after the answer, split points, edits; random bytes
    upgrade=with_junk((16, 6, 30), 300),
)
def test_proxy_replies_and_websocket_upgrade_answers(
    example_loop, socks5, socks4a, http, upgrade
) -> None:
    _prop_socks5_replies(example_loop, socks5)
    _prop_socks4a_replies(example_loop, socks4a)
    _prop_http_connect_replies(example_loop, http)
    _prop_websocket_upgrade_answers(example_loop, upgrade)


def test_websocket_status_in_other_scripts_is_a_dial_error(example_loop) -> None:
    """Regression: as for HTTP CONNECT, a status of '²' made int() raise ValueError."""
    result = outcome(example_loop, upgrade(UpgradeServer(b"HTTP/1.1 \xb2 x\r\n\r\n", b"")))
    assert isinstance(result, DialError)
