"""`mtproxy:HOST:PORT;secret=SECRET`: reach a Telegram data centre through an MTProto proxy
someone was handed (`tg://proxy?server=..&port=..&secret=..`), so that Telegram behind detour
(its SOCKS port, the router's transparent mode, detour's own MTProto endpoint) can use the
server too, and detour can fail over to and from it.

    client (app) --SOCKS--> detour --obfuscated2 (keyed with the secret)--> proxy --> DC

For a connection to a DC address (transports/mtproto/dcs.py says which DC it is), the layer
opens a connection to the proxy through the layers before it (`socks5://... | mtproxy:...`
works) and, for an `ee` secret, does the fake-TLS handshake at once (mtproto/client.py: the
ClientHello, the check of the proxy's signed answer). Then, from the client's first bytes:

- an obfuscated2 init (Telegram's apps, Telethon's obfuscated connections, detour's probe):
  the layer reads it with the client's keys, learns the client's framing (its protocol
  tag), and sends the proxy an init of its own, keyed with the secret and carrying the DC's
  number; from then on it decrypts what the client sends and encrypts it again for the
  proxy, and the other way round (the two streams' keys have nothing in common);
- abridged, intermediate or padded intermediate in the clear (Telethon's plain
  connections): the same, without the client's side of the ciphers;
- anything else (MTProto's full transport, HTTP, TLS, junk): the connection is reset, with a
  log line that says why, and nothing is sent to the proxy.

The init toward a plain-secret proxy keeps the client's framing; toward `dd` and `ee` proxies
it says padded intermediate, which they require (mtproto/client.py), and packets are
re-framed both ways when the client speaks another framing.

A destination that is no DC address fails at once with `not_applicable`, as on `tgws`
routes. The secret never appears in a log line, an error or `str()` of the layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, NoReturn

from .base import Dialer, DialError, Endpoint, Failure, Op, Stream, dial_phase
from .mtproto.client import Reframer, client_hello, server_flight
from .mtproto.dcs import DEFAULT_DCS, DataCentre, DcTable
from .mtproto.faketls import HelloError, RecordError, RecordReader, wrap_records
from .mtproto.framing import FramingError
from .mtproto.obfuscated2 import Obfuscation, Tag, TransportKind, dc_field, initiate
from .mtproto.pipe import Ciphers, PipedSocket, scratch
from .mtproto.secret import ProxySecret, SecretMode, parse_secret
from .mtproto.start import StartRefused, read_start
from .wrapped import HeldBytes, WrappedStream

__all__ = ["MTProxyDialer", "MTProxyOptions", "MTProxyStream", "parse_options"]

log = logging.getLogger("detour.transports.mtproxy")

SYNTAX = "mtproxy:HOST:PORT;secret=SECRET"
_CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
# The largest record taken from the proxy (TLS 1.3 ciphertext may be 2^14 + 256; proxies
# send no more, but a looser bound costs nothing here).
_MAX_RECORD = (1 << 16) - 1
_UNCARRIED = {
    TransportKind.FULL: "MTProto's full transport, which MTProto proxies do not take: use an "
    "obfuscated, abridged or intermediate connection",
    TransportKind.HTTP: "HTTP (MTProto over HTTP, or not MTProto)",
    TransportKind.TLS: "TLS (not MTProto)",
}


@dataclass(frozen=True)
class MTProxyOptions:
    """What an `mtproxy:` layer's text says (parse_options)."""

    server: Endpoint
    secret: ProxySecret

    def __repr__(self) -> str:
        return f"MTProxyOptions({self.server}, {self.secret!r})"


def parse_options(text: str) -> MTProxyOptions:
    """`HOST:PORT;secret=SECRET` (after `mtproxy:`). Raises ValueError naming the key at
    fault, never quoting the secret."""
    address, *options = (part.strip() for part in text.split(";"))
    if not address:
        raise ValueError(f"the proxy's address is missing ({SYNTAX})")
    try:
        server = Endpoint.parse(address)
    except ValueError as exc:
        raise ValueError(f"the proxy's address: {exc}") from None
    if not 0 < server.port < 65536:
        raise ValueError(f"port {server.port} is out of range (1-65535)")
    secret = None
    for option in filter(None, options):
        key, sep, value = option.partition("=")
        key = key.strip().lower()
        if key != "secret":
            raise ValueError(f"unknown option {key[:20]!r} (valid: secret=SECRET)")
        if not sep or not value.strip():
            raise ValueError("secret: it is empty")
        try:
            secret = parse_secret(value)
        except ValueError as exc:
            raise ValueError(f"secret: {exc}") from None
    if secret is None:
        raise ValueError(f"secret= is missing ({SYNTAX})")
    return MTProxyOptions(server, secret)


def show(options: MTProxyOptions) -> str:
    """The layer as text, the secret hidden but for its kind (`dd***`, `ee***`)."""
    mode = options.secret.mode
    prefix = "" if mode is SecretMode.PLAIN else mode.value
    return f"mtproxy:{options.server};secret={prefix}***"


class MTProxyDialer:
    """Dial a Telegram DC address through an MTProto proxy (see the module's docstring)."""

    def __init__(
        self,
        inner: Dialer,
        options: MTProxyOptions,
        *,
        table: DcTable = DEFAULT_DCS,
        handshake_timeout: float = 10.0,
        clock=time.time,
    ) -> None:
        self.inner = inner
        self.server = options.server
        self.secret = options.secret
        self.table = table
        self.handshake_timeout = handshake_timeout
        self.clock = clock

    def __repr__(self) -> str:
        return f"MTProxyDialer({self.server}, inner={self.inner!r})"

    def not_applicable(self, target: Endpoint) -> str | None:
        if self.table.lookup(target.host) is None:
            return (
                f"{target.host} is not an address of Telegram's data centres (an MTProto "
                "proxy carries only connections to them)"
            )
        return None

    async def dial(self, target: Endpoint) -> MTProxyStream:
        reason = self.not_applicable(target)
        if reason is not None:
            raise DialError(Failure.NOT_APPLICABLE, Op.CONNECT, reason)
        dc = self.table.lookup(target.host)
        assert dc is not None
        try:
            stream = await self.inner.dial(self.server)
        except DialError as exc:
            if type(exc) is not DialError:
                raise
            detail = f"at the MTProto proxy {self.server}: {exc.detail}"
            raise DialError(exc.failure, exc.op, detail) from None
        leftover = b""
        if self.secret.mode is SecretMode.FAKE_TLS:
            dial_phase.set(Op.PROXY_HANDSHAKE)
            try:
                async with asyncio.timeout(self.handshake_timeout):  # a cancel is never lost
                    leftover = await self._fake_tls(stream)
            except TimeoutError:
                stream.abort()
                raise DialError(
                    Failure.TIMEOUT,
                    Op.PROXY_HANDSHAKE,
                    f"MTProto proxy {self.server} did not answer the fake-TLS ClientHello "
                    f"within {self.handshake_timeout:g}s",
                ) from None
            except BaseException:
                stream.abort()
                raise
        return MTProxyStream(stream, dc, self.server, self.secret, leftover)

    async def _fake_tls(self, stream: Stream) -> bytes:
        assert self.secret.domain is not None
        hello = client_hello(self.secret.key, self.secret.domain, now=self.clock())
        received = bytearray()
        after_hello = (
            "after the fake-TLS ClientHello: a wrong secret, or a censor that fingerprints fake TLS"
        )
        try:
            stream.write(hello)
            await stream.drain()
            while (size := server_flight(self.secret.key, hello, received)) is None:
                data = await stream.read(65536)
                if not data:
                    raise DialError(
                        Failure.EOF,
                        Op.PROXY_HANDSHAKE,
                        f"MTProto proxy {self.server} closed the connection {after_hello}",
                    )
                received += data
        except HelloError as exc:
            raise DialError(
                Failure.PROXY_PROTOCOL_ERROR,
                Op.PROXY_HANDSHAKE,
                f"MTProto proxy {self.server} answered as a website ({exc}): a wrong "
                "secret, or no MTProto proxy there",
            ) from None
        except DialError:
            raise
        except OSError:
            raise DialError(
                Failure.CONNECTION_RESET,
                Op.PROXY_HANDSHAKE,
                f"MTProto proxy {self.server} reset the connection {after_hello}",
            ) from None
        return bytes(received[size:])


class MTProxyStream(WrappedStream):
    """A client's MTProto stream through an MTProto proxy (see the module's docstring);
    the stream to the proxy is `inner`."""

    def __init__(
        self,
        stream: Stream,
        dc: DataCentre,
        server: Endpoint,
        secret: ProxySecret,
        leftover: bytes = b"",
    ) -> None:
        super().__init__(stream)
        self.dc = dc
        self.server = server
        self._secret = secret
        self._records = RecordReader(_MAX_RECORD) if secret.mode is SecretMode.FAKE_TLS else None
        self._start = bytearray()  # the client's first bytes, until they say what it speaks
        self._client: Obfuscation | None = None  # the client's ciphers (None: in the clear)
        self._ours: Obfuscation | None = None  # toward the proxy
        self._up: Reframer | None = None
        self._down: Reframer | None = None
        self._rejected: str | None = None
        self._answered = False
        self._held: deque[bytes] = deque([leftover] if leftover else [])  # raw, from the proxy
        self._unread = HeldBytes()  # for the client, already converted
        self._piped: PipedSocket | None = None

    # --- toward the proxy -----------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._rejected is not None:
            raise ConnectionResetError(self._rejected)
        if self._ours is None:
            self._start += data
            if not self._begin():
                return
            data, self._start = bytes(self._start), bytearray()
            if not data:
                return
        self._send(data)

    def _begin(self) -> bool:
        try:
            start = read_start(self._start, _UNCARRIED)
        except StartRefused as exc:
            self._reject(str(exc))
        if start is None:
            return False
        self._client, tag = start.obfuscation, start.tag
        del self._start[: start.size]
        upstream = tag if self._secret.mode is SecretMode.PLAIN else Tag.PADDED
        if upstream is not tag:
            self._up, self._down = Reframer(tag, upstream), Reframer(upstream, tag)
        field = dc_field(self.dc.id, media=self.dc.media, test=self.dc.test)
        init, self._ours = initiate(upstream, field, secret=self._secret.key)
        if self._records is not None:
            self.inner.write(_CCS_RECORD + wrap_records(init))
        else:
            self.inner.write(init)
        return True

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        assert self._ours is not None
        if self._client is not None:
            if self._up is None:  # decrypted into a reused buffer: one new one per write
                data = self._client.receive.apply_into(data, scratch(len(data)))
            else:
                data = self._client.decrypt(data)
        if self._up is not None:
            try:
                data = self._up.feed(data)
            except FramingError as exc:
                self._reject(f"the client sent {exc}")
            if not data:
                return
        data = self._ours.encrypt(data)
        self.inner.write(wrap_records(data) if self._records is not None else data)

    def _reject(self, why: str) -> NoReturn:
        self._rejected = f"MTProto proxy {self.server}: {why}"
        log.info("%s; closing the connection", self._rejected)
        self.inner.abort()
        raise ConnectionResetError(self._rejected)

    def write_eof(self) -> None:
        if self._rejected is None:
            self.inner.write_eof()

    # --- toward the client ----------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        if self._unread:
            return self._unread.take(n)
        while True:
            raw = self._held.popleft() if self._held else await self.inner.read(n)
            if not raw:
                why = self._unanswered()
                if why is not None:
                    # Said here, naming the proxy, rather than as a bare end of stream: what
                    # a probe reports, and the client's connection is reset.
                    log.info("%s", why)
                    raise DialError(Failure.EOF, Op.MTPROTO_ROUND_TRIP, why)
                return b""
            data = self._convert(raw)
            if data:
                self._answered = True
                if len(data) > n:
                    self._unread.add(data[n:])
                    data = data[:n]
                return data

    def _unanswered(self) -> str | None:
        """What a proxy's end of stream means while it has not answered (None once it has,
        or before the client's init)."""
        if self._answered or self._ours is None:
            return None
        return (
            f"MTProto proxy {self.server} closed the connection without answering: a wrong "
            f"secret, or the proxy cannot reach Telegram's {self.dc}"
        )

    def _convert(self, raw: bytes) -> bytes:
        if self._records is not None:
            try:
                raw = self._records.feed(raw)
            except RecordError as exc:
                self._reject(f"the proxy sent {exc}")
            if not raw:
                return b""
        if self._ours is None:
            self._reject("the proxy sent data before the client's init")
        if self._client is not None and self._down is None:
            plain = self._ours.receive.apply_into(raw, scratch(len(raw)))
            return self._client.encrypt(plain)  # one new buffer per read, not two
        data = self._ours.decrypt(raw)
        if self._down is not None:
            try:
                data = self._down.feed(data)
            except FramingError as exc:
                if not self._answered:
                    self._reject(f"the answer is not MTProto ({exc}): a wrong secret?")
                self._reject(f"the proxy sent {exc}")
        if self._client is not None and data:
            data = self._client.encrypt(data)
        return data

    def unread(self, data: bytes) -> None:
        self._unread.put_back(data)

    # --- the rest -----------------------------------------------------------------------------

    def shaping(self) -> bool:
        return True  # every byte is re-encrypted

    def raw_socket_stream(self) -> PipedSocket | None:
        """For the relay's fast path (mtproto/pipe.py), once the client's init is out, over
        a plain socket, when no packet needs re-framing: a stand-in for the socket that
        re-encrypts both ways in the transport's callbacks."""
        if self._ours is None or self._rejected is not None or self._up is not None or self._unread:
            return None
        inner = self.inner.raw_socket_stream()
        if inner is None:
            return None
        if not self._answered and getattr(getattr(inner, "protocol", None), "eof", False):
            return None  # the proxy ended unanswered: read() says so and the client is reset
        if self._piped is None or self._piped.inner is not inner:
            records = self._records.splitter if self._records is not None else None
            client = self._client
            ciphers = Ciphers(
                from_app=client.receive if client is not None else None,
                to_far=self._ours.send,
                from_far=self._ours.receive,
                to_app=client.send if client is not None else None,
                records=records,
            )
            name = f"MTProto proxy {self.server}"
            self._piped = PipedSocket(inner, ciphers, self._convert_held, self._unanswered, name)
        return self._piped

    def _convert_held(self, raw: bytes) -> bytes:
        """What arrived from the proxy and was not read yet (`raw`: the socket's part),
        converted for the client, when the relay takes the socket over."""
        held = b"".join([*self._held, raw])
        self._held.clear()
        return self._convert(held) if held else b""

    def is_closing(self) -> bool:
        return self._rejected is not None or self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "mtproxy_server":
            return str(self.server)
        return self.inner.get_extra_info(name, default)
