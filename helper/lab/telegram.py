"""The lab's Telegram: mock data centres that speak the start of MTProto, and a mock of the
web endpoints Telegram's web client reaches them through (what `tgws` uses).

A mock DC (`telegram-dc1` ... `telegram-dc5`) answers on 80 and 443 both ways a real one
does: plain HTTP (what OONI's telegram test POSTs; passed to a small web app) and MTProto
after an obfuscated2 init. It decodes the init, reads the transport's packets, answers an
unencrypted req_pq_multi with a well-formed resPQ -- the nonce echoed, a fresh server nonce,
a pq that is the product of two primes, and the fingerprint of one of Telegram's public RSA
keys, which every client knows -- and records what the client sends next. A client that
accepts the resPQ sends req_DH_params (its choice of key, p and q, and its RSA-encrypted
inner data): the mock records it and closes, since it holds no private key to go on.

The mock web endpoint (`telegram-ws`: kws1..5, kws1-1..5-1, pluto..flora and their "-1"
names under web.telegram.org, TLS with the lab CA) upgrades `/apiws` (and `/apiws_test`) to a
WebSocket with the `binary` subprotocol, checks that the first message is an obfuscated2 init
and that every message holds whole MTProto packets (as the real endpoints want them), and
carries the stream to the DC its name stands for, directly (Telegram's own network, not
through the censor). A Close from the client half-closes the DC connection; the DC's end
becomes the endpoint's Close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from transports.mtproto import (
    INIT_LEN,
    FramingError,
    InitError,
    PacketReader,
    PacketSplitter,
    TransportKind,
    accept,
    classify,
    encode_packet,
)
from transports.mtproto import messages as tl

__all__ = [
    "WEB_NAMES",
    "DcEvent",
    "DcLog",
    "dc_handler",
    "server_key_fingerprint",
    "web_endpoint_app",
]

log = logging.getLogger("detour.lab.telegram")

_PLANETS = ("pluto", "venus", "aurora", "vesta", "flora")
# The names the mock web endpoint answers to, DC 1..5.
WEB_NAMES = tuple(
    f"{prefix}{suffix}.web.telegram.org"
    for n in range(1, 6)
    for prefix in (f"kws{n}", _PLANETS[n - 1])
    for suffix in ("", "-1")
)
_NAME = re.compile(r"^(?:kws(?P<n>[1-5])|(?P<planet>[a-z]+))(?:-1)?\.web\.telegram\.org$")
_PATHS = ("/apiws", "/apiws_test")
MAX_MESSAGE = 4 << 20
FIRST_BYTES_TIMEOUT = 10.0
INIT_PATIENCE = 1.0

# Telegram's RSA public key (as Telegram's apps and Telethon ship it). Public; the mock sends
# only its fingerprint, so that a real client finds a key it knows.
TELEGRAM_KEY = """\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAruw2yP/BCcsJliRoW5eBVBVle9dtjJw+OYED160Wybum9SXtBBLX
riwt4rROd9csv0t0OHCaTmRqBcQ0J8fxhN6/cpR1GWgOZRUAiQxoMnlt0R93LCX/
j1dnVa/gVbCjdSxpbrfY2g2L4frzjJvdl84Kd9ORYjDEAyFnEA7dD556OptgLQQ2
e2iVNq8NZLYTzLp5YpOdO1doK+ttrltggTCy5SrKeLoCPPbOgGsdxJxyz5KKcZnS
Lj16yE5HvJQn0CNpRdENvRUXe6tBP78O39oJ8BTHp9oIjd6XWXAsp2CvK45Ol8wF
XGF710w9lwCGNbmNxNYhtIkdqfsEcwR5JwIDAQAB
-----END RSA PUBLIC KEY-----
"""


def server_key_fingerprint() -> int:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    numbers = load_pem_public_key(TELEGRAM_KEY.encode()).public_numbers()  # type: ignore[union-attr]
    return tl.rsa_fingerprint(numbers.n, numbers.e)


def web_dc(host: str) -> int | None:
    """The DC a web endpoint name stands for (kws2..., venus...: 2), None for other names."""
    match = _NAME.match(host.lower().split(":")[0])
    if match is None:
        return None
    if match["n"]:
        return int(match["n"])
    planet = match["planet"]
    return _PLANETS.index(planet) + 1 if planet in _PLANETS else None


# --- the mock DC ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DcEvent:
    """Something a mock DC saw from a client."""

    dc: int
    what: str  # "req_pq_multi", "req_DH_params", "not MTProto", ...
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DcLog:
    """What every mock DC saw, in order; tests wait on `changed`."""

    events: list[DcEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: DcEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, what: str, timeout: float = 10.0) -> DcEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event.what == what:
                        return event
                self.changed.clear()
                await self.changed.wait()


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17):  # deterministic below 3.4e14, and far beyond 2^31
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng: random.Random) -> int:
    while not _is_prime(candidate := rng.randrange(1 << 30, 1 << 31) | 1):
        pass
    return candidate


class _MTProtoSession:
    def __init__(self, dc: int, events: DcLog, fingerprint: int) -> None:
        self.dc = dc
        self.events = events
        self.fingerprint = fingerprint
        self.sent: tl.ResPQ | None = None
        self.primes: tuple[int, int] = (0, 0)

    def answer(self, payload: bytes) -> tuple[bytes | None, bool]:
        """(reply body or None, whether to go on) for one packet's payload."""
        try:
            _, body = tl.parse_unencrypted(payload)
        except tl.MessageError as exc:
            self.events.add(DcEvent(self.dc, "not MTProto", {"error": str(exc)}))
            return None, False
        kind = tl.constructor(body)
        if kind in (tl.REQ_PQ_MULTI, tl.REQ_PQ):
            nonce = tl.parse_req_pq(body)
            rng = random.Random(os.urandom(8))
            p, q = sorted((_prime(rng), _prime(rng)))
            self.primes = (p, q)
            pq = p * q
            self.sent = tl.ResPQ(
                nonce, os.urandom(16), pq.to_bytes((pq.bit_length() + 7) // 8, "big"),
                (self.fingerprint,),
            )  # fmt: skip
            self.events.add(DcEvent(self.dc, "req_pq_multi", {"nonce": nonce}))
            return tl.res_pq(self.sent), True
        if kind == tl.REQ_DH_PARAMS and self.sent is not None:
            try:
                request = tl.parse_req_dh_params(body)
            except tl.MessageError as exc:
                self.events.add(DcEvent(self.dc, "not MTProto", {"error": str(exc)}))
                return None, False
            self.events.add(
                DcEvent(
                    self.dc,
                    "req_DH_params",
                    {
                        "request": request,
                        "answered": self.sent,
                        "primes": self.primes,
                        "fingerprint": self.fingerprint,
                    },
                )
            )
            return None, False  # no private key to go on with: the exchange ends here
        self.events.add(DcEvent(self.dc, "unexpected", {"constructor": kind}))
        return None, False


def _server_message_id() -> int:
    return (tl.message_id() & ~3) | 1  # a server's answers are 1 mod 4


def dc_handler(
    dc: int, events: DcLog, http_port: int
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """The connection handler of mock DC `dc`: HTTP goes to the web app on `http_port`,
    anything else is read as MTProto."""
    fingerprint = server_key_fingerprint()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = b""
            async with asyncio.timeout(FIRST_BYTES_TIMEOUT):
                while (kind := classify(first)) is None and len(first) < 8:
                    more = await reader.read(8 - len(first))
                    if not more:
                        return
                    first += more
            if kind is not TransportKind.HTTP:
                # An init comes whole with the client's first packet: bytes that stop short of
                # one (a plain client's "ping") get the web app's answer, as anything did
                # before the DC spoke MTProto.
                try:
                    async with asyncio.timeout(INIT_PATIENCE):
                        first += await reader.readexactly(INIT_LEN - len(first))
                except TimeoutError:
                    kind = TransportKind.HTTP
            if kind is TransportKind.HTTP:
                await _pipe_to("127.0.0.1", http_port, first, reader, writer)
            else:
                await _mtproto(dc, events, fingerprint, first, reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that left or said nothing: nothing to answer
        finally:
            writer.close()

    return handle


async def _mtproto(
    dc: int,
    events: DcLog,
    fingerprint: int,
    init: bytes,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        header, obfuscation = accept(init)
    except InitError as exc:
        events.add(DcEvent(dc, "not MTProto", {"error": str(exc)}))
        return
    session = _MTProtoSession(dc, events, fingerprint)
    packets = PacketReader(header.tag)
    while data := await reader.read(65536):
        try:
            payloads = packets.feed(obfuscation.decrypt(data))
        except FramingError as exc:
            events.add(DcEvent(dc, "not MTProto", {"error": str(exc)}))
            return
        for payload in payloads:
            reply, go_on = session.answer(payload)
            if reply is not None:
                message = tl.unencrypted(reply, _server_message_id())
                writer.write(obfuscation.encrypt(encode_packet(header.tag, message)))
                await writer.drain()
            if not go_on:
                return


async def _pipe_to(
    host: str, port: int, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    up_reader, up_writer = await asyncio.open_connection(host, port)
    up_writer.write(first)

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    try:
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
    finally:
        up_writer.close()


# --- the mock web endpoint -------------------------------------------------------------------


def web_endpoint_app(dcs: Mapping[int, tuple[str, int]]) -> web.Application:
    """The web endpoints of DC 1..5, carrying to the DC servers at `dcs` (DC -> address)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        dc = web_dc(request.host or "")
        if dc is None or request.path not in _PATHS:
            return web.Response(status=404, text="not found\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="a WebSocket endpoint\n")
        if dc not in dcs:
            # What Telegram's endpoints answer when they will not carry a connection.
            raise web.HTTPFound("https://web.telegram.org/")
        ws = web.WebSocketResponse(
            protocols=("binary",), max_msg_size=MAX_MESSAGE, autoclose=False, autoping=True
        )
        await ws.prepare(request)
        try:
            await _carry(ws, dcs[dc])
        finally:
            await ws.close()
        return ws

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _carry(ws: web.WebSocketResponse, dc: tuple[str, int]) -> None:
    first = await ws.receive()
    if first.type != aiohttp.WSMsgType.BINARY or len(first.data) != INIT_LEN:
        await ws.close(code=1002, message=b"expected an obfuscated2 init")
        return
    try:
        header, obfuscation = accept(first.data)
    except InitError:
        await ws.close(code=1002, message=b"not an obfuscated2 init")
        return
    keystream = obfuscation.receive

    def reveal(offset: int, raw: bytes) -> bytes:
        pad = keystream.peek(INIT_LEN + offset, len(raw))
        return bytes(a ^ b for a, b in zip(raw, pad, strict=True))

    splitter = PacketSplitter(header.tag, reveal=reveal, limit=MAX_MESSAGE)
    reader, writer = await asyncio.open_connection(*dc)
    writer.write(first.data)

    async def up() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                try:
                    splitter.feed(message.data)
                except FramingError:
                    await ws.close(code=1002, message=b"an impossible packet length")
                    writer.close()
                    return
                if splitter.pending:
                    await ws.close(code=1002, message=b"a message that is no whole packets")
                    writer.close()
                    return
                writer.write(message.data)
                await writer.drain()
            elif message.type == aiohttp.WSMsgType.CLOSE:
                break
            else:
                await ws.close(code=1003, message=b"binary messages only")
                writer.close()
                return
        if writer.can_write_eof():
            writer.write_eof()  # the client's Close: the DC hears the end, may still answer

    async def down() -> None:
        while data := await reader.read(MAX_MESSAGE):
            await ws.send_bytes(data)
        await ws.close()  # the DC ended: so does the WebSocket (the client answers the Close)

    try:
        await asyncio.gather(up(), down())
    except (ConnectionError, RuntimeError):
        pass  # either side left: the WebSocket closes below
    finally:
        writer.close()


def client_context_for(ca_path: str) -> ssl.SSLContext:
    """A TLS context that trusts the lab CA (for tests that reach the endpoint directly)."""
    context = ssl.create_default_context()
    context.load_verify_locations(ca_path)
    return context
