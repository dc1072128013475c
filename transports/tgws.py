"""`tgws`: reach a Telegram data centre through its web endpoint, as Telegram's web client
does, when the DC's own address is blocked.

For a connection to a DC address (transports/mtproto/dcs.py says which DC it is), the layer
opens TLS to that DC's web endpoint (`kws2.web.telegram.org` for DC 2) through the layers
before it -- so `resolve:doh=... | tlsfrag:sni | tgws` and `socks5://... | tgws` work --
upgrades to a WebSocket on /apiws (subprotocol `binary`), and carries the client's MTProto
byte stream in binary messages both ways:

    client (app) --SOCKS--> detour --TLS: wss://kwsN.web.telegram.org/apiws--> Telegram

What the client sends first decides how:

- an obfuscated2 init (what Telegram's apps and web clients send, and Telethon's
  ConnectionTcpObfuscated): passed on unchanged, the init as one message and then each
  MTProto packet as one message (the web endpoints read a message as a unit). The layer
  never decrypts the stream; it reads only the length fields, with the keystream at their
  offsets (the init carries its key in the clear).
- abridged (0xef), intermediate (0xeeeeeeee) or padded intermediate (0xdddddddd) in the
  clear (Telethon's ConnectionTcpAbridged and ConnectionTcpIntermediate): the web
  endpoints accept only obfuscated streams, so the layer obfuscates for the client: a new
  init of its own, each packet encrypted on the way up, the answers decrypted on the way
  down.
- anything else -- the "full" transport (ConnectionTcpFull: a length and a sequence number,
  which the web endpoints do not speak), HTTP, TLS, junk, a packet length beyond 2 MiB --
  cannot be carried: the connection is closed (reset), with a log line that says why, and
  nothing is sent to Telegram.

The client ending its side (a half-close) becomes the WebSocket's Close frame, after which
the endpoint may still send what it has; its Close ends the stream toward the client.

A destination that is no DC address, or a DC without a web endpoint (DC 203, or one whose
endpoints answered HTTP 302 instead of an upgrade: the media hosts do for accounts without
Premium), fails at once with `not_applicable` and the reason: the router moves to the next
route without counting it against this one (`not_applicable()` lets it skip the route
before dialing).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .base import Dialer, DialError, Endpoint, Failure, Op, dial_phase
from .mtproto import dcs as _dcs
from .mtproto.dcs import DEFAULT_DCS, DataCentre, DcTable, WebEndpoint
from .mtproto.framing import MAX_PACKET, FramingError, PacketSplitter
from .mtproto.obfuscated2 import INIT_LEN, Keystream, Obfuscation, TransportKind, dc_field, initiate
from .mtproto.start import StartRefused, read_start
from .tcp import SocketStream
from .tls import tls_connect_fast
from .websocket import UpgradeRefused, WebSocketStream, websocket_connect
from .wrapped import HeldBytes, WrappedStream
from .wsfast import TgWsPipe

__all__ = ["TgWsDialer", "TgWsOptions", "TgWsStream", "parse_options"]

log = logging.getLogger("detour.transports.tgws")

# The upgrade as Telegram's web client sends it (a browser's).
ORIGIN = "https://web.telegram.org"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# The largest message taken from the endpoint: one MTProto packet (a 1 MiB file part with
# its headers) with room to spare.
MAX_MESSAGE = MAX_PACKET + 4096
# How long a DC whose web endpoints refused the upgrade is not tried again over them.
REFUSAL_MEMORY = 600.0

_UNCARRIED = {
    TransportKind.FULL: "MTProto's full transport (a length and a sequence number), which "
    "the web endpoints do not speak: use an obfuscated, abridged or intermediate connection",
    TransportKind.HTTP: "HTTP (MTProto over HTTP, or not MTProto), which the web endpoints "
    "do not take over WebSocket",
    TransportKind.TLS: "TLS (a fake-TLS MTProto proxy client, or not MTProto)",
}


@dataclass(frozen=True)
class TgWsOptions:
    """What a `tgws:` layer's text says (parse_options)."""

    addresses: Mapping[str, DataCentre] = field(default_factory=dict)  # dcN=ADDR,...
    connect_to: Endpoint | None = None  # addr=HOST[:PORT]: instead of the endpoint's name


def parse_options(text: str) -> TgWsOptions:
    """`dc2=149.154.167.51,2001:67c:4e8:f002::a;addr=149.154.167.99` (after `tgws:`).
    Raises ValueError naming what is valid."""
    addresses: dict[str, DataCentre] = {}
    connect_to = None
    for option in filter(None, (o.strip() for o in text.split(";"))):
        key, sep, value = option.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise ValueError(f"option {option!r} has no value (dcN=ADDRESS, addr=HOST[:PORT])")
        if key.startswith("dc") and key[2:].isascii() and key[2:].isdigit():
            dc = int(key[2:])
            if not 0 < dc < 10000:
                raise ValueError(f"{key}: no DC has that number")
            for address in (a.strip() for a in value.split(",")):
                canonical = _dcs.canonical_address(address)
                if canonical is None:
                    raise ValueError(f"{key}: {address!r} is not an IP address")
                addresses[canonical] = DataCentre(dc)
        elif key == "addr":
            try:
                connect_to = Endpoint.parse(value, _dcs.WEB_PORT)
            except ValueError as exc:
                raise ValueError(f"addr={value!r}: {exc}") from None
        else:
            raise ValueError(
                f"unknown option {key!r} (valid: dcN=ADDRESS[,ADDRESS...], addr=HOST[:PORT])"
            )
    return TgWsOptions(addresses, connect_to)


class TgWsDialer:
    """Dial a Telegram DC address through its web endpoint (see the module's docstring).

    `table` is the DC table (transports/mtproto/dcs.py's unless given); `connect_to` is
    where to connect instead of resolving the endpoint's name (TLS and Host still name it)."""

    def __init__(
        self,
        inner: Dialer,
        *,
        table: DcTable = DEFAULT_DCS,
        connect_to: Endpoint | None = None,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.inner = inner
        self.table = table
        self.connect_to = connect_to
        self.tls = tls or ssl.create_default_context()
        self.handshake_timeout = handshake_timeout
        self._refused: dict[DataCentre, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"TgWsDialer(inner={self.inner!r})"

    def not_applicable(self, target: Endpoint) -> str | None:
        """Why this layer cannot carry a connection to `target` at all (None: it can)."""
        dc = self.table.lookup(target.host)
        if dc is None:
            return (
                f"{target.host} is not an address of Telegram's data centres "
                "(tgws carries only connections to them)"
            )
        if not self.table.endpoints(dc):
            return f"{target.host} is Telegram's {dc}, which has no web endpoint"
        refused = self._refused.get(dc)
        if refused is not None:
            until, why = refused
            if time.monotonic() < until:
                return why
            del self._refused[dc]
        return None

    async def dial(self, target: Endpoint) -> TgWsStream:
        reason = self.not_applicable(target)
        if reason is not None:
            raise DialError(Failure.NOT_APPLICABLE, Op.CONNECT, reason)
        dc = self.table.lookup(target.host)
        assert dc is not None
        answers = []
        for endpoint in self.table.endpoints(dc):
            try:
                ws = await self._open(endpoint)
            except UpgradeRefused as refused:
                answers.append(f"{endpoint} answered HTTP {refused.status or '(not HTTP)'}")
                continue
            return TgWsStream(ws, dc, endpoint)
        why = (
            f"no web endpoint takes Telegram's {dc}: {'; '.join(answers)} instead of a "
            "WebSocket (not tried again for 10 minutes)"
        )
        self._refused[dc] = (time.monotonic() + REFUSAL_MEMORY, why)
        log.info("tgws: %s", why)
        raise DialError(Failure.NOT_APPLICABLE, Op.PROXY_HANDSHAKE, why)

    async def _open(self, endpoint: WebEndpoint) -> WebSocketStream:
        address = self.connect_to or Endpoint(endpoint.host, endpoint.port)
        try:
            stream = await self.inner.dial(address)
        except DialError as exc:
            if type(exc) is not DialError:
                raise  # a policy refusal or a transport's own kind: as it is
            raise DialError(exc.failure, exc.op, f"{endpoint.host}: {exc.detail}") from None
        try:
            dial_phase.set(Op.TLS_HANDSHAKE)
            # On the loop's own TLS transport when the route below is a bare socket; over
            # anything that must see the ClientHello (`tlsfrag`), in Python as before.
            tls = await tls_connect_fast(
                stream, self.tls, endpoint.host, timeout=self.handshake_timeout
            )
            dial_phase.set(Op.PROXY_HANDSHAKE)
            return await websocket_connect(
                tls,
                endpoint.host,
                endpoint.path,
                headers={
                    "Sec-WebSocket-Protocol": _dcs.SUBPROTOCOL,
                    "Origin": ORIGIN,
                    "User-Agent": USER_AGENT,
                },
                timeout=self.handshake_timeout,
                max_frame=MAX_MESSAGE,
            )
        except DialError as exc:
            stream.abort()
            if isinstance(exc, UpgradeRefused):
                raise
            raise DialError(exc.failure, exc.op, f"{endpoint.host}: {exc.detail}") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            stream.abort()
            raise DialError(
                Failure.CONNECTION_RESET if isinstance(exc, ConnectionError) else Failure.EOF,
                Op.PROXY_HANDSHAKE,
                f"{endpoint.host}: the connection broke during the WebSocket upgrade",
            ) from None


class TgWsStream(WrappedStream):
    """A client's MTProto stream over a web endpoint's WebSocket (see the module's
    docstring); the WebSocket is `inner` (and `ws`, for its message calls). Not a plain
    socket underneath: the relay copies it on its generic path."""

    def __init__(self, ws: WebSocketStream, dc: DataCentre, endpoint: WebEndpoint) -> None:
        super().__init__(ws)
        self.ws = ws
        ws.partial_reads = True  # the client reads a byte stream: no need to wait for messages
        self.dc = dc
        self.endpoint = endpoint
        self._start = bytearray()  # the client's first bytes, until they say what it speaks
        self._splitter: PacketSplitter | None = None
        self._wrap: Obfuscation | None = None  # ours, for a client that does not obfuscate
        self._rejected: str | None = None
        self._held = HeldBytes()  # unread() bytes, already decrypted
        self._pipe: TgWsPipe | None = None

    # --- toward Telegram ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._rejected is not None:
            raise ConnectionResetError(self._rejected)
        if self._splitter is None:
            self._start += data
            if not self._begin():
                return
            data, self._start = bytes(self._start), bytearray()
        self._send(data)

    def _begin(self) -> bool:
        """Decide from the client's first bytes how to carry its stream; False until there
        are enough of them. Sends the init; leaves in _start what follows it."""
        try:
            start = read_start(self._start, _UNCARRIED)
        except StartRefused as exc:
            self._reject(str(exc))
        if start is None:
            return False
        if start.obfuscation is not None:  # the client's own init goes on as it is
            init = bytes(self._start[:INIT_LEN])
            up = start.obfuscation.receive  # the client's keystream; only peeked at
            self._splitter = PacketSplitter(start.tag, reveal=_revealer(up, INIT_LEN))
        else:
            init, self._wrap = initiate(start.tag, dc_field(self.dc.id, media=self.dc.media))
            self._splitter = PacketSplitter(start.tag)
        del self._start[: start.size]
        self.ws.write_message(init)
        return True

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        assert self._splitter is not None
        try:
            packets = self._splitter.feed_parts(data)
        except FramingError as exc:
            self._reject(f"the client sent {exc}")
        wrap = self._wrap
        for parts in packets:
            if wrap is not None:
                self.ws.write_message(
                    wrap.encrypt(parts[0] if len(parts) == 1 else b"".join(parts))
                )
            else:  # a packet that spans reads is copied once, into its frame
                self.ws.write_message_parts(parts)

    def _reject(self, why: str) -> NoReturn:
        """Carry nothing more: close the WebSocket, and fail the client's connection."""
        self._rejected = f"tgws to {self.endpoint.host}: {why}"
        log.info("%s; closing the connection", self._rejected)
        self.ws.close()
        raise ConnectionResetError(self._rejected)

    def can_write_eof(self) -> bool:
        return True  # the client's end is sent as a Close frame; reading goes on (close_write)

    def write_eof(self) -> None:
        if self._rejected is not None:
            return
        if self._splitter is None:
            # The client ended before its first bytes said anything: nothing was sent.
            if self._start:
                log.info(
                    "tgws to %s: the client ended after %d bytes, inside its MTProto init",
                    self.endpoint.host,
                    len(self._start),
                )
        elif self._splitter.pending:
            tail = self._splitter.take_pending()  # a cut-off packet: Telegram decides
            self.ws.write_message(self._wrap.encrypt(tail) if self._wrap else tail)
        self.ws.close_write()

    # --- toward the client ----------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        if self._held:
            return self._held.take(n)
        data = await self.ws.read(n)
        return self._wrap.decrypt(data) if self._wrap is not None and data else data

    def unread(self, data: bytes) -> None:
        self._held.put_back(data)

    # --- the rest ---------------------------------------------------------------------------

    def shaping(self) -> bool:
        return True  # every byte is framed into messages: the relay never takes a raw socket

    def raw_socket_stream(self) -> TgWsPipe | None:
        """For the relay's fast path (transports/wsfast.py): once the client's init has gone
        out, when the client obfuscates its stream itself and the TLS runs on the event
        loop's transport in TLS 1.3 (which encrypts each write before returning). Otherwise
        None, and the relay copies with tasks. Depends only on what does not change while
        the relay switches paths."""
        ws = self.ws
        if type(ws) is not WebSocketStream:
            return None
        inner = ws.inner
        if (
            self._splitter is None
            or self._wrap is not None
            or self._rejected is not None
            or self._held
            or not ws.partial_reads
            or ws._fragments
            or type(inner) is not SocketStream
            or inner._detached
            or not inner.copies_writes
        ):
            return None
        if self._pipe is None:
            self._pipe = TgWsPipe(self)
        return self._pipe

    def is_closing(self) -> bool:
        return self._rejected is not None or self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "tgws_endpoint":
            return str(self.endpoint)
        return self.inner.get_extra_info(name, default)


def _revealer(keystream: Keystream, start: int):
    """reveal(offset, raw) for a PacketSplitter over a stream this side does not decrypt:
    XOR with the keystream at the bytes' position (`start`: where the packets begin)."""

    def reveal(offset: int, raw: bytes) -> bytes:
        pad = keystream.peek(start + offset, len(raw))
        return bytes(a ^ b for a, b in zip(raw, pad, strict=True))

    return reveal
