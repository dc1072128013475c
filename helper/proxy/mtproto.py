"""The MTProto proxy endpoint (`[mtproto_proxy]`): Telegram's apps on phones and computers
add detour as an "MTProto proxy" (a `tg://proxy` link) and reach Telegram through detour's
routes, with no SOCKS on the phone (docs/telegram.md).

Flow per connection, as a listener of the client server (server.py), which does admission,
routing, the relay and the accounting:

    allow-list and limits
    -> the handshake (MTProtoHandshake, within mtproto_proxy.handshake_timeout):
         first byte 0x16 and an `ee` secret: a fake-TLS ClientHello (transports/mtproto/
         faketls.py), checked against each ee secret (HMAC, clock, replays); answered with a
         ServerHello; then the records carry the rest
         otherwise: the 64-byte obfuscated2 init, tried with each plain and dd secret
    -> which user, which DC (transports/mtproto/proxy.py); the DC's address from the table
    -> router.connect(DC:443), as a SOCKS CONNECT to that address would be: the telegram
       service's routes with failover (direct, tgws, socks, front, ...)
    -> the client's first packet (with detour's init) through that route; when the route
       resets or closes before answering, through the next one (retry.py, FIRST_PACKET)
    -> relay (ReencryptedStream, the Request's client stream): what the client sends is
       decrypted with its keys and encrypted with detour's toward the DC; what the DC sends
       passes unchanged, since detour's init makes the DC use the client's keystream (on a
       plain socket the relay's fast path does both, with no task per direction).

What a client that is not a proxy client gets (a prober, a browser, junk, a wrong secret, a
replay, a truncated init) -- never an answer that says detour:

- with an `ee` secret configured: everything it sent and sends is relayed byte for byte to
  the site the secret imitates (mtproto_proxy.mask, by default the secret's domain on 443),
  and the site's answers back: a prober sees that web site.
- without one: nothing. The connection is held open and what arrives is read and dropped,
  until the client closes (then detour closes too) or nothing arrives for idle_timeout.

A client that did open its init with a secret but then names no known DC, or sends a packet
length no MTProto packet has (empty, over 2 MiB), is closed (a reset on the relay's path,
with a log line that says why).

Why this module is long: the endpoint's three parts belong together and share private
state -- the handshake that tells a client from a prober, the streams that re-encrypt and
unwrap fake TLS, and the relay's fast path for them (a transport, a protocol and shared
buffers that reach into those streams' keystreams and record splitter); apart, each would
have to expose the others' internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transports import Endpoint, Op, Stream
from transports.base import IPNetwork
from transports.mtproto import DEFAULT_DCS, DcTable, FramingError, InitError, Obfuscation, faketls
from transports.mtproto.obfuscated2 import INIT_LEN, Header, initiate_relayed
from transports.mtproto.proxy import LengthGuard, dc_address, identify
from transports.mtproto.secret import ProxyLink, ProxySecret, SecretMode
from transports.tcp import connect_tcp, reset_transport
from transports.wrapped import WrappedStream

from ..config import MTProtoProxyConfig
from .handshake import ProtocolError
from .limits import endpoint_admission
from .listener import ClientConnection, Listener, Request
from .mtproto_links import proxy_links
from .relay import relay
from .retry import FirstFlight

__all__ = [
    "Accepted",
    "Failed",
    "FakeTlsStream",
    "MTProtoHandshake",
    "MTProtoProxy",
    "ReencryptedStream",
    "Refused",
]

log = logging.getLogger("detour.proxy")

DC_PORT = 443

# The client's first packet (with detour's init) goes through the next route when the first
# one resets or closes before answering: detour's keys toward the DC are the same for every
# route (initiate_relayed), so the bytes are too, and nothing has reached the client yet. A
# DC that stays silent is waited for (an app's first request need not be answered at once).
FIRST_PACKET = FirstFlight(
    "the client's first packet", any_bytes=True, silence_fails=False, op=Op.MTPROTO_ROUND_TRIP
)


class _Truncated(Exception):
    """The client ended (or the deadline passed) before the bytes a step needs."""


@dataclass
class Accepted:
    """A proxy client: its user, what its init says, its ciphers, and its byte stream (the
    socket, or for fake TLS the records' contents), positioned after the init."""

    user: str
    secret: ProxySecret
    header: Header
    obfuscation: Obfuscation
    stream: Stream


@dataclass
class Refused:
    """Not a proxy client. `seen`: every byte read from it so far, as it came."""

    reason: str
    seen: bytes


@dataclass
class Failed:
    """A fake-TLS client answered as a proxy client (its hello was valid) whose handshake
    then failed: it is closed, not passed on."""

    reason: str


class FakeTlsStream(WrappedStream):
    """A fake-TLS client's stream: reads return the application-data records' contents,
    writes go out as records. `held`: bytes read past the ClientHello."""

    def __init__(self, inner: Stream, held: bytes = b"") -> None:
        super().__init__(inner)
        self.records = faketls.RecordSplitter()
        self._failed: str | None = None
        self._ready = self.payload(held) if held else b""

    def payload(self, raw: bytes | bytearray | memoryview) -> bytes:
        """The application data in `raw` (the records' next bytes); ConnectionResetError
        for a record no client sends (and on every read after it)."""
        try:
            return b"".join(self.records.feed(raw))
        except faketls.RecordError as exc:
            self._failed = f"fake TLS: {exc}"
            raise ConnectionResetError(self._failed) from None

    async def read(self, n: int = 65536) -> bytes:
        if self._ready:
            data, self._ready = self._ready, b""
            return data
        while True:
            if self._failed is not None:
                raise ConnectionResetError(self._failed)
            raw = await self.inner.read(n)
            if not raw:
                if self.records.pending:
                    raise ConnectionResetError("the client ended inside a TLS record")
                return b""
            data = self.payload(raw)
            if data:
                return data

    def unread(self, data: bytes) -> None:
        self._ready = data + self._ready

    def write(self, data: bytes) -> None:
        if data:
            self.inner.write(faketls.wrap_records(data))

    def raw_socket_stream(self) -> Any:
        return None


class ReencryptedStream(WrappedStream):
    """The client's stream as the DC is to see it. Reads: detour's own init toward the DC
    together with the client's first bytes, then what the client sends, decrypted with its
    keys and encrypted with detour's (packet lengths checked on the way). Writes (from the
    DC) go to the client unchanged: detour's init makes the DC encrypt with the keystream the
    client decrypts with (initiate_relayed), so the download costs no cipher pass at all."""

    def __init__(
        self, inner: Stream, client: Obfuscation, header: Header, *, limit: int | None = None
    ) -> None:
        super().__init__(inner)
        self._from_client = client.receive
        self.init, dc = initiate_relayed(header.tag, header.dc_field, client.send)
        self._to_dc = dc.send
        self._sent_init = False
        self._ready = b""
        self._fast: _ReencryptingSocket | None = None
        self._failed: str | None = None
        self._guard = LengthGuard(header.tag) if limit is None else LengthGuard(header.tag, limit)

    async def read(self, n: int = 65536) -> bytes:
        if self._ready:
            data, self._ready = self._ready, b""
            return data
        if self._failed is not None:
            raise ConnectionResetError(self._failed)
        data = await self.inner.read(n)
        if not data:
            return b""
        try:
            out = self._to_dc.apply(self._decrypt(data))
        except FramingError as exc:
            self._failed = f"MTProto: {exc}"  # and on every read after it
            raise ConnectionResetError(self._failed) from None
        if not self._sent_init:
            self._sent_init = True
            return self.init + out  # one flight: a retry through another route resends it
        return out

    def _decrypt(
        self, data: bytes | bytearray | memoryview, pieces: Sequence[memoryview] = ()
    ) -> memoryview:
        """What the client sent (`data`, or its `pieces` of `data`'s size at most),
        decrypted and checked (FramingError), in a buffer that is reused (a new one per
        read costs its size in page faults): use it at once."""
        buffer = _scratch.plain(len(data))
        if not pieces:
            plain = self._from_client.apply_into(data, buffer)
        else:
            out, size = memoryview(buffer), 0
            for piece in pieces:
                size += len(self._from_client.apply_into(piece, out[size:]))  # type: ignore[arg-type]
            plain = out[:size]
        self._guard.feed(plain)
        return plain

    def unread(self, data: bytes) -> None:
        self._ready = data + self._ready

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def raw_socket_stream(self) -> Any:
        """For the relay's fast path, when the client is a socket (its records parsed by
        detour with fake TLS): a stand-in for it whose transport re-encrypts what it
        receives before the relay sees it (and writes records, with fake TLS)."""
        records = self.inner if isinstance(self.inner, FakeTlsStream) else None
        inner = (records.inner if records is not None else self.inner).raw_socket_stream()
        if inner is None or self._failed is not None:
            return None
        if records is not None and (records._failed is not None or records._ready):
            return None
        if self._fast is None or self._fast.inner is not inner:
            self._fast = _ReencryptingSocket(self, inner, records)
        return self._fast


class _ReencryptingSocket:
    """What the relay's fast path takes from a ReencryptedStream over a socket: its
    transport (wrapped: what arrives is re-encrypted in place of the relay's own reads,
    with no task and no buffer per read) and the bytes already re-encrypted or held.
    `records`: the fake-TLS layer between, whose records the wrapper then parses and
    writes itself."""

    def __init__(
        self, stream: ReencryptedStream, inner: Any, records: FakeTlsStream | None
    ) -> None:
        self.stream = stream
        self.inner = inner
        self.records = records

    def detach(self) -> tuple[Any, bytes, Any]:
        stream, records = self.stream, self.records
        transport, held, state = self.inner.detach()
        pending = stream._ready
        stream._ready = b""
        try:
            if records is not None and held:
                held = records.payload(held)
            if held:
                pending += stream._to_dc.apply(stream._decrypt(held))
        except (FramingError, ConnectionResetError) as exc:
            log.info("MTProto proxy: a client %s; reset", exc)
            reset_transport(transport)
        if not stream._sent_init:
            stream._sent_init = True
            pending = stream.init + pending
        splitter = records.records if records is not None else None
        return _ReencryptingTransport(transport, stream, splitter), pending, state


class _ReencryptingTransport:
    """A client's transport whose protocol (the relay's) receives the client's bytes as
    the DC is to see them; with fake TLS, what the relay writes goes out as records (their
    payloads as views of the relay's buffer, in one vectored write). Everything else is the
    transport's own."""

    def __init__(
        self,
        transport: asyncio.Transport,
        stream: ReencryptedStream,
        splitter: faketls.RecordSplitter | None,
    ) -> None:
        self._transport = transport
        self._stream = stream
        self._splitter = splitter
        self._protocol: asyncio.BaseProtocol | None = None
        if splitter is not None:
            self.write = self._write_records  # type: ignore[method-assign]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol
        self._transport.set_protocol(
            _ReencryptingProtocol(protocol, self._stream, self._transport, self._splitter)
        )

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self._protocol

    def _write_records(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._transport.writelines(faketls.record_pieces(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _ReencryptingProtocol(asyncio.BufferedProtocol):
    """Receives into a shared buffer, decrypts (and checks) into a second, encrypts into
    the relay's own buffer and tells the relay, all in one callback."""

    def __init__(
        self,
        relay: asyncio.BufferedProtocol,
        stream: ReencryptedStream,
        transport: asyncio.Transport,
        splitter: faketls.RecordSplitter | None = None,
    ) -> None:
        self.relay = relay
        self.stream = stream
        self.transport = transport
        self.splitter = splitter
        self.failed = False

    def get_buffer(self, sizehint: int) -> memoryview:
        # What arrives must fit the relay's buffer once encrypted (update_into: + a block).
        room = len(self.relay.get_buffer(sizehint)) - 16
        return _scratch.received(room)

    def buffer_updated(self, nbytes: int) -> None:
        if self.failed:
            return
        stream = self.stream
        received = _scratch.received(nbytes)
        try:
            if self.splitter is None:
                plain = stream._decrypt(received)
            else:
                pieces = self.splitter.feed(received)
                if not pieces:
                    return  # record headers only, so far
                plain = stream._decrypt(received, pieces)
        except (FramingError, faketls.RecordError) as exc:
            self.failed = True
            log.info("MTProto proxy: a client %s; reset", exc)
            reset_transport(self.transport)
            return
        size = len(plain)
        target = self.relay.get_buffer(size)
        assert len(target) >= size + 15
        stream._to_dc.apply_into(plain, target)  # type: ignore[arg-type]
        self.relay.buffer_updated(size)

    def eof_received(self) -> bool | None:
        if self.failed:
            return None
        if self.splitter is not None and self.splitter.pending:
            self.failed = True
            log.info("MTProto proxy: a client ended inside a TLS record; reset")
            reset_transport(self.transport)
            return None
        return self.relay.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.connection_lost(exc)

    def pause_writing(self) -> None:
        self.relay.pause_writing()

    def resume_writing(self) -> None:
        self.relay.resume_writing()


class _Scratch(threading.local):
    """The buffers a client's bytes pass through on their way to the DC, one pair per event
    loop's thread: each is used and done with inside one read or one callback, so every
    connection can share them."""

    def __init__(self) -> None:
        self._plain = bytearray()
        self._received = memoryview(bytearray())

    def plain(self, size: int) -> bytearray:
        if len(self._plain) < size + 15:  # update_into's room for a block
            self._plain = bytearray(max(size + 15, _SCRATCH))
        return self._plain

    def received(self, size: int) -> memoryview:
        if len(self._received) < size:
            self._received = memoryview(bytearray(max(size, _SCRATCH)))
        return self._received[:size]


_SCRATCH = 256 * 1024 + 16
_scratch = _Scratch()


class MTProtoHandshake:
    """Tells a proxy client from everything else (the module's docstring). Keeps the replay
    caches, so one instance serves a listener for its lifetime."""

    def __init__(
        self,
        secrets: dict[str, ProxySecret] | Sequence[tuple[str, ProxySecret]],
        *,
        time_skew: float = 1200.0,
        replay_cache: int = 65536,
        clock: Callable[[], float] = time.time,
        urandom: Callable[[int], bytes] | None = None,
    ) -> None:
        pairs = list(secrets.items()) if isinstance(secrets, dict) else list(secrets)
        self.fake_tls = [(n, s) for n, s in pairs if s.mode is SecretMode.FAKE_TLS]
        self.obfuscated = [(n, s) for n, s in pairs if s.mode is not SecretMode.FAKE_TLS]
        self.time_skew = time_skew
        self.clock = clock
        self._urandom = urandom
        # A hello is refused by its clock beyond the skew: the cache need not outlive that.
        self.hellos = faketls.ReplayCache(replay_cache, window=2 * time_skew)
        self.inits = faketls.ReplayCache(replay_cache)

    async def accept(self, stream: Stream, timeout: float) -> Accepted | Refused | Failed:
        seen = bytearray()
        answered: list[bool] = []  # not empty once a ServerHello has gone out
        try:
            async with asyncio.timeout(timeout):
                return await self._accept(stream, seen, answered)
        except TimeoutError:
            reason = f"no handshake within {timeout:g}s"
        except _Truncated:
            reason = "the client ended before its handshake did"
        except OSError as exc:
            reason = f"the connection failed in the handshake ({exc})"
        return Failed(reason) if answered else Refused(reason, bytes(seen))

    async def _accept(
        self, stream: Stream, seen: bytearray, answered: list[bool]
    ) -> Accepted | Refused | Failed:
        await _read_until(stream, seen, 1)
        if seen[0] == 0x16 and self.fake_tls:
            # A TLS record starts 16 03; an init may start with 0x16 too (1 in 256), but
            # hardly with 16 03 as well (and Telegram's clients never send 16 03 01 02).
            await _read_until(stream, seen, 2)
            if seen[1] == 0x03 or not self.obfuscated:
                return await self._accept_tls(stream, seen, answered)
        if not self.obfuscated:
            return Refused("not a fake-TLS ClientHello", bytes(seen))
        await _read_until(stream, seen, INIT_LEN)
        try:
            user, secret, header, obfuscation = identify(
                bytes(seen[:INIT_LEN]), self.obfuscated, replays=self.inits, now=self.clock()
            )
        except InitError as exc:
            return Refused(str(exc), bytes(seen))
        if len(seen) > INIT_LEN:
            stream.unread(bytes(seen[INIT_LEN:]))
        return Accepted(user, secret, header, obfuscation, stream)

    async def _accept_tls(
        self, stream: Stream, seen: bytearray, answered: list[bool]
    ) -> Accepted | Refused | Failed:
        try:
            await _read_until(stream, seen, faketls.HEADER_LEN)
            size = faketls.hello_length(seen)
            assert size is not None
            await _read_until(stream, seen, size)
        except faketls.HelloError as exc:
            return Refused(str(exc), bytes(seen))
        record = bytes(seen[:size])
        now = self.clock()
        found: tuple[str, ProxySecret, faketls.ClientHello] | None = None
        problem = "no fake-TLS secret"
        for user, secret in self.fake_tls:
            try:
                hello = faketls.check_client_hello(record, secret.key, now=now, skew=self.time_skew)
            except faketls.HelloError as exc:
                problem = str(exc)
                continue
            found = user, secret, hello
            break
        if found is None:
            return Refused(problem, bytes(seen))
        user, secret, hello = found
        if not self.hellos.add(hello.proof, now):
            return Refused("a replayed ClientHello", bytes(seen))
        extra = {} if self._urandom is None else {"urandom": self._urandom}
        stream.write(faketls.server_hello(secret.key, hello, **extra))
        answered.append(True)
        # From here the client has been answered as a proxy: what fails now just closes.
        records = FakeTlsStream(stream, bytes(seen[size:]))
        init = bytearray()
        while len(init) < INIT_LEN:
            data = await records.read(INIT_LEN - len(init))
            if not data:
                raise _Truncated
            init += data
        if len(init) > INIT_LEN:
            records.unread(bytes(init[INIT_LEN:]))
        try:
            _, _, header, obfuscation = identify(
                bytes(init[:INIT_LEN]), [(user, secret)], replays=self.inits, now=now
            )
        except InitError as exc:
            return Failed(f"after a valid ClientHello: {exc}")
        return Accepted(user, secret, header, obfuscation, records)


async def _read_until(stream: Stream, seen: bytearray, size: int) -> None:
    while len(seen) < size:
        data = await stream.read(65536)
        if not data:
            raise _Truncated
        seen += data


# --- the listener -------------------------------------------------------------------------


class MTProtoProxy(Listener):
    """`[mtproto_proxy]`: a listener of the client server (server.py) whose handshake is the
    MTProto proxy's. Its own limits (mtproto_proxy.max_connections, max_per_client) and the
    allow-list; `max_per_user` counts each user's connections."""

    backlog = 256

    kind = "mtproto"

    def __init__(
        self,
        config: MTProtoProxyConfig,
        *,
        allow: tuple[IPNetwork, ...] = (),
        dcs: DcTable = DEFAULT_DCS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        admission = endpoint_admission("mtproto_proxy", config, allow, log, "MTProto proxy")
        super().__init__(
            config.listen,
            admission,
            setting="mtproto_proxy.listen",
            handshake_timeout=None,  # its own: a timeout is masked, not closed
            idle_timeout=config.idle_timeout,
        )
        self.config = config
        self.dcs = dcs
        self.handshake_state = MTProtoHandshake(
            dict(config.secrets),
            time_skew=config.time_skew,
            replay_cache=config.replay_cache,
            clock=clock,
        )
        self.mask = config.mask
        if self.mask is None and config.fake_tls:
            domain = config.fake_tls[0].domain
            assert domain is not None
            self.mask = Endpoint(domain, 443)
        self._by_user: dict[str, set[ClientConnection]] = {}

    @property
    def address_bound(self) -> tuple[str, int] | None:
        sockets = self.sockets
        return (str(sockets[0][0]), int(sockets[0][1])) if sockets else None

    def links(self) -> list[ProxyLink]:
        return proxy_links(self.config, self.address_bound)

    def announce(self) -> None:
        """Log where it listens (once its port is open)."""
        bound = self.address_bound
        modes = sorted({s.mode.value for s in self.config.secrets.values()})
        log.info(
            "MTProto proxy on %s: %d user(s), secrets %s%s",
            Endpoint(*bound) if bound else self.address,
            len(self.config.secrets),
            ", ".join(modes),
            f"; others passed to {self.mask}" if self.handshake_state.fake_tls else "",
        )

    def unreachable(self, conn: ClientConnection, request: Request, exc: Exception) -> None:
        # The app cannot hear a reason; a reset makes it try again (or another DC).
        log.info("MTProto proxy: client %s: %s", conn.client, exc)

    async def handshake(self, conn: ClientConnection) -> Request | None:
        config = self.config
        outcome = await self.handshake_state.accept(conn.stream, config.handshake_timeout)
        if isinstance(outcome, Refused):
            await self._not_a_client(conn, outcome)
            return None
        if isinstance(outcome, Failed):
            raise ProtocolError(f"MTProto proxy: {outcome.reason}; closed")
        user, header = outcome.user, outcome.header
        if not self._admit_user(user, conn):
            raise ProtocolError(
                f"MTProto proxy: user {user}: at the limit of {config.max_per_user} "
                "connections per user (mtproto_proxy.max_per_user); closed"
            )
        address = dc_address(header, self.dcs, config.dcs)
        if address is None:
            raise ProtocolError(
                f"MTProto proxy: user {user} asked for DC {header.dc_field}, which detour "
                "does not know (mtproto_proxy.dcs adds it); closed"
            )
        kind = f"{'test ' if header.test else ''}DC {header.dc}{' media' if header.media else ''}"
        return Request(
            f"mtproto ({user}, {kind})",
            Endpoint.parse(address, DC_PORT),
            first_flight=FIRST_PACKET,
            client=ReencryptedStream(outcome.stream, outcome.obfuscation, header),
        )

    def _admit_user(self, user: str, conn: ClientConnection) -> bool:
        """Count `conn` as one of `user`'s (connections that ended are dropped first)."""
        mine = self._by_user.setdefault(user, set())
        for other in [c for c in mine if c.task is None or c.task.done()]:
            mine.discard(other)
        limit = self.config.max_per_user
        if limit and len(mine) >= limit:
            return False
        mine.add(conn)
        return True

    async def _not_a_client(self, conn: ClientConnection, refused: Refused) -> None:
        throttled = self.admission.throttled
        if self.handshake_state.fake_tls and self.mask is not None:
            throttled.log(
                "masked",
                logging.INFO,
                "MTProto proxy: client %s is no proxy client (%s): passed to %s",
                conn.client,
                refused.reason,
                self.mask,
            )
            conn.protocol = "mtproto-mask"
            await self._pass_to_mask(conn.stream, refused.seen)
            return
        throttled.log(
            "silent",
            logging.INFO,
            "MTProto proxy: client %s is no proxy client (%s): held without an answer",
            conn.client,
            refused.reason,
        )
        await _hold(conn.stream, self.config.idle_timeout)

    async def _pass_to_mask(self, stream: Stream, seen: bytes) -> None:
        assert self.mask is not None
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                site = await connect_tcp(self.mask.host, self.mask.port)
        except (OSError, TimeoutError) as exc:
            log.info("MTProto proxy: cannot reach %s to pass a client to (%s)", self.mask, exc)
            await _hold(stream, self.config.idle_timeout)
            return
        if seen:
            site.write(seen)
        await relay(stream, site, idle_timeout=self.config.idle_timeout)


async def _hold(stream: Stream, idle_timeout: float) -> None:
    """Read and drop until the client ends or is quiet for `idle_timeout`; then close."""
    with contextlib.suppress(TimeoutError, OSError):
        while True:
            async with asyncio.timeout(idle_timeout):
                if not await stream.read(65536):
                    break
    stream.close()
