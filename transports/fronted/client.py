"""`front:ACCESS_KEY`: reach the destination through a detour relay behind a CDN front.

A tunnel: connect to the front (through the inner dialer), TLS with the front's name
(certificate checked as for any site), a WebSocket upgrade with the relay's Host, path and
access token, TLS 1.3 inside the WebSocket with the relay's certificate pinned and detour's
client certificate. Then a request naming the destination; what comes back is the
destination's stream, end-to-end encrypted between detour and the relay.

A relay that multiplexes (ALPN "detour-mux/1", mux.py) carries many connections in one
tunnel: a dial then costs one round trip to the relay instead of three handshakes. The
dialer keeps such tunnels open while they carry connections, and a little longer; an older
relay, or `;mux=off`, gets one tunnel per connection.

Against a censor that freezes flows after ~16 KB, the tunnel can instead run across many
short connections, none over a byte budget (`;carrier=capped`, or `auto`, the default, after
a long tunnel froze: modes.py, capped.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from ..base import Dialer, DialError, Endpoint, Failure, Op, Stream, dial_phase
from ..heap import keep_large_buffers
from ..tls import TlsStream, tls_connect
from ..websocket import UpgradeRefused, websocket_connect
from .accesskey import AccessKey, access_token
from .capped import DEFAULT_BUDGET, Counted
from .mux import ALPN, MuxSession
from .protocol import NeedMore, ProtocolError, encode_request, parse_reply

__all__ = ["FrontDialer", "HandshakePacer", "inner_client_context"]

log = logging.getLogger("detour.transports.front")

# What a browser sends: the upgrade should look like any web app's WebSocket.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
COOKIE = "__session"

MAX_STREAMS = 100  # connections per tunnel; one more opens a second tunnel
IDLE_CLOSE = 60.0  # a tunnel with no connection is closed after this long
KEEPALIVE = 20.0  # a silent tunnel is pinged after this long (CDNs cut idle WebSockets)
PLAIN_RETRY = 600.0  # after a relay declined multiplexing, ask again after this long


class HandshakePacer(Protocol):
    """What paces the TLS handshakes with a front (helper/search/budget.py's
    HandshakeBudget): the block runs when a handshake to `name` may be under way (its TCP
    connect included), and awaits what it is given just before the ClientHello goes out
    (the hellos' times are the ones kept apart)."""

    def handshake(
        self, name: str
    ) -> AbstractAsyncContextManager[Callable[[], Awaitable[None]]]: ...


def inner_client_context(key: AccessKey) -> ssl.SSLContext:
    """TLS 1.3 with detour's client certificate; the relay's certificate is checked by its
    pin after the handshake (it is self-signed: no CA vouches for it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # ssl loads keys only from files: write them to a private directory for the moment.
    with tempfile.TemporaryDirectory(prefix="detour-key-") as tmp:
        cert, private = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(ssl.DER_cert_to_PEM_cert(key.cert))
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_pem("PRIVATE KEY", key.key))
        context.load_cert_chain(cert, private)
    return context


def _pem(label: str, der: bytes) -> str:
    import base64

    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


class FrontDialer:
    def __init__(
        self,
        inner: Dialer,
        key: AccessKey,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        mux: bool = True,
        pacer: HandshakePacer | None = None,
        carrier: str = "auto",
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        keep_large_buffers()  # the tunnel's 256 KiB buffers without page faults (heap.py)
        self.inner = inner
        self.key = key
        self.outer_tls = tls or ssl.create_default_context()
        self._inner_contexts: dict[bool, ssl.SSLContext] = {}
        self._inner_context(multiplex=mux)  # now: a key ssl cannot load fails the build
        self.handshake_timeout = handshake_timeout
        self.mux = mux
        self.sessions: list[MuxSession] = []
        self._opening: asyncio.Future[MuxSession | None] | None = None
        self._plain_until = 0.0
        # Which token the relay reads: None until a tunnel opened; False for a relay from
        # before the token's nonce, which sees the new form as a wrong token.
        self._nonce: bool | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        # Every TLS handshake with the front (a capped tunnel's carriers too) waits for the
        # handshake budget of the front's name (helper/search/budget.py), shared with
        # probes, searches and races.
        self.pacer = pacer
        from .modes import CarrierMode

        self.carrier = CarrierMode(self, carrier if mux else "long", budget)

    def __repr__(self) -> str:
        return f"FrontDialer(front={self.key.front!r}, relay={self.key.host!r})"

    async def dial(self, target: Endpoint) -> Stream:
        if not self.mux or self._closed:
            return await self._dial_plain(target)
        for attempt in (1, 2):
            session = await self._session()  # bounded by the connect and handshake timeouts
            if session is None:
                return await self._dial_plain(target)
            try:
                return await self._open(session, target)
            except DialError as exc:
                # A tunnel that had carried connections and ended under this request (the
                # relay restarting, the CDN recycling its connection) says nothing about the
                # route: once more, on a new tunnel. A refusal from the relay, a timeout, or
                # a new tunnel that fails at once is the answer.
                stale = not session.alive and session.answered > 0
                if attempt == 2 or not stale or exc.failure is Failure.TIMEOUT:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def check(self) -> None:
        """Open a tunnel to the relay (the front, the upgrade, the relay's pinned certificate):
        DialError when it cannot be opened. A multiplexed tunnel stays open for the
        connections to come; one for a single connection is closed again."""
        if self.mux and not self._closed and await self._session() is not None:
            return
        inner = await self._connect(self._inner_context(multiplex=False))
        inner.close()

    async def adapt_to_freeze(self) -> bool:
        """A transfer through this route stopped mid-way (a probe's): True when the tunnel has
        changed how it carries because of it (carrier=auto found a long tunnel frozen and
        goes capped), so the same transfer may work now. modes.CarrierMode.confirm_freeze."""
        return await self.carrier.confirm_freeze()

    async def _open(self, session: MuxSession, target: Endpoint) -> Stream:
        dial_phase.set(Op.PROXY_HANDSHAKE)
        asked = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.handshake_timeout):
                return await session.open(target)
        except TimeoutError:
            if session.last_heard < asked:
                # Not a word since the request, not even to the ping that went with it:
                # the tunnel is dead (a NAT or middlebox dropped it). The next dial opens
                # a new one.
                session.close()
            raise self._no_answer() from None

    async def _session(self) -> MuxSession | None:
        """A tunnel with room for one more connection: an open one, the one being opened, or
        a new one. None when the relay does not multiplex."""
        if asyncio.get_running_loop().time() < self._plain_until:
            return None
        for session in self.sessions:
            if session.usable(MAX_STREAMS):
                return session
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._open_session())
            self._opening.add_done_callback(_retrieved)
        # Shared by every dial waiting for it; one caller giving up does not stop it.
        return await asyncio.shield(self._opening)

    async def _open_session(self) -> MuxSession | None:
        if self.carrier.capped_now():
            capped = await self.carrier.open_session(KEEPALIVE)
            if capped is not None:
                return self._keep(capped)
        inner = await self._connect(self._inner_context(multiplex=True))
        if inner.get_extra_info("ssl_object").selected_alpn_protocol() != ALPN:
            # A relay from before multiplexing: one tunnel per connection, as it expects.
            inner.close()
            self._plain_until = asyncio.get_running_loop().time() + PLAIN_RETRY
            log.info(
                "front %s: the relay does not multiplex; one tunnel per connection", self.key.front
            )
            return None
        session = MuxSession(inner, keepalive=KEEPALIVE, name=f"front {self.key.front}")
        self.carrier.watch_long(session, inner)
        return self._keep(session)

    def _keep(self, session: MuxSession) -> MuxSession:
        self.sessions.append(session)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())
        return session

    async def _reap(self) -> None:
        """Drop ended tunnels; close those that have carried nothing for IDLE_CLOSE."""
        loop = asyncio.get_running_loop()
        while self.sessions:
            await asyncio.sleep(min(IDLE_CLOSE / 4, 5.0))
            for session in list(self.sessions):
                idle = not session.streams and loop.time() - session.idle_since >= IDLE_CLOSE
                if idle or not session.alive:
                    self.sessions.remove(session)
                    await session.aclose()

    async def aclose(self) -> None:
        """Close the open tunnels (on shutdown, or when a new config replaces this one)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        sessions, self.sessions = self.sessions, []
        await asyncio.gather(*(s.aclose() for s in sessions), return_exceptions=True)
        await self.carrier.aclose()

    async def _dial_plain(self, target: Endpoint) -> Stream:
        """One tunnel for one connection."""
        inner = await self._connect(self._inner_context(multiplex=False))
        try:
            async with asyncio.timeout(self.handshake_timeout):
                return await self._request(inner, target)
        except TimeoutError:
            inner.abort()
            raise self._no_answer() from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            inner.abort()
            if isinstance(exc, DialError):
                raise
            raise self._broken(exc) from None

    async def _connect(self, inner_tls: ssl.SSLContext) -> TlsStream:
        """A tunnel up to the inner TLS, its pin checked: DialError otherwise. Until one has
        opened, a refused upgrade is tried once more with the older form of token (a relay
        from before the nonce answers the new one with its website)."""
        nonce = self._nonce is not False
        try:
            inner = await self._connect_once(inner_tls, nonce)
        except UpgradeRefused:
            if self._nonce is not None:
                raise
            inner = await self._connect_once(inner_tls, nonce=False)
            nonce = False
        self._nonce = nonce
        return inner

    async def _connect_once(self, inner_tls: ssl.SSLContext, nonce: bool) -> TlsStream:
        if self.pacer is None:
            return await self._connect_paced(inner_tls, nonce, None)
        async with self.pacer.handshake(self.key.front) as start:
            return await self._connect_paced(inner_tls, nonce, start)

    async def _connect_paced(
        self, inner_tls: ssl.SSLContext, nonce: bool, start: Callable[[], Awaitable[None]] | None
    ) -> TlsStream:
        key = self.key
        try:
            stream = await self.inner.dial(key.address)
        except DialError as exc:
            raise DialError(exc.failure, exc.op, f"front {key.address}: {exc.detail}") from None
        if start is not None:
            try:
                await start()  # the ClientHello's turn (the budget keeps the hellos' times)
            except BaseException:
                stream.abort()
                raise
        if self.carrier.counting:
            stream = Counted(stream)  # what the front sent, to tell a freeze
        dial_phase.set(Op.PROXY_HANDSHAKE)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                return await self._tunnel(stream, inner_tls, nonce)
        except TimeoutError:
            stream.abort()
            raise DialError(
                Failure.TIMEOUT,
                Op.PROXY_HANDSHAKE,
                f"the tunnel through {key.front} was not open within {self.handshake_timeout:g}s",
            ) from None
        except DialError:
            stream.abort()
            raise
        except (OSError, asyncio.IncompleteReadError) as exc:
            stream.abort()
            raise self._broken(exc) from None

    def _no_answer(self) -> DialError:
        return DialError(
            Failure.TIMEOUT,
            Op.PROXY_HANDSHAKE,
            f"the relay did not answer through {self.key.front} within {self.handshake_timeout:g}s",
        )

    def _broken(self, exc: BaseException) -> DialError:
        return DialError(
            Failure.CONNECTION_RESET if isinstance(exc, ConnectionError) else Failure.EOF,
            Op.PROXY_HANDSHAKE,
            f"the tunnel through {self.key.front} broke: {exc or type(exc).__name__}",
        )

    def _inner_context(self, multiplex: bool) -> ssl.SSLContext:
        """The inner TLS context, offering ALPN detour-mux/1 or nothing. The one without is
        needed only for a relay that does not multiplex: made when first needed (each writes
        the client key to a private file for the moment ssl loads it)."""
        context = self._inner_contexts.get(multiplex)
        if context is None:
            context = inner_client_context(self.key)
            if multiplex:
                context.set_alpn_protocols([ALPN])
            self._inner_contexts[multiplex] = context
        return context

    async def _tunnel(self, stream: Stream, inner_tls: ssl.SSLContext, nonce: bool) -> TlsStream:
        key = self.key
        outer = await tls_connect(stream, self.outer_tls, key.front, timeout=self.handshake_timeout)
        asked = asyncio.get_running_loop().time()
        ws = await websocket_connect(
            outer,
            key.host,
            key.path,
            headers=self._headers(access_token(key, nonce=nonce)),
            timeout=self.handshake_timeout,
        )
        # The upgrade is a round trip to the relay through the front, as a PING is.
        self.carrier.note_answer(asyncio.get_running_loop().time() - asked)
        try:
            inner = await tls_connect(ws, inner_tls, None, timeout=self.handshake_timeout)
        except DialError as exc:
            raise DialError(exc.failure, Op.PROXY_HANDSHAKE, f"relay: {exc.detail}") from None
        self._check_pin(inner)
        return inner

    def _headers(self, token: str) -> dict[str, str]:
        """The upgrade's header fields: what a browser's WebSocket sends, and the token."""
        return {
            "User-Agent": USER_AGENT,
            "Origin": f"https://{self.key.host}",
            "Cookie": f"{COOKIE}={token}",
        }

    async def _request(self, inner: TlsStream, target: Endpoint) -> Stream:
        inner.write(encode_request(target))
        await inner.drain()
        reply = b""
        while True:
            try:
                used, error = parse_reply(reply)
                break
            except NeedMore:
                chunk = await inner.read(4096)
                if not chunk:
                    raise DialError(
                        Failure.EOF, Op.PROXY_HANDSHAKE, "the relay closed without an answer"
                    ) from None
                reply += chunk
            except ProtocolError as exc:
                raise DialError(
                    Failure.PROXY_PROTOCOL_ERROR, Op.PROXY_HANDSHAKE, f"relay: {exc}"
                ) from None
        if error is not None:
            inner.abort()
            raise error
        inner.unread(reply[used:])
        return inner

    def _check_pin(self, inner: TlsStream) -> None:
        der = inner.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
        seen = hashlib.sha256(der).hexdigest()
        if not hmac.compare_digest(seen, self.key.pin):
            inner.abort()
            raise DialError(
                Failure.SSL_INVALID_CERTIFICATE,
                Op.PROXY_HANDSHAKE,
                "the relay's certificate does not match the access key's pin (someone between "
                "the front and the relay?)",
            )


def _retrieved(future: asyncio.Future[object]) -> None:
    """A tunnel set-up whose every waiting dial gave up (a race lost, a deadline) may still
    fail: its error was for them, not for the event loop's log."""
    if not future.cancelled():
        future.exception()
