"""The `ss://` layer's Dialer: a connection to the Shadowsocks server through the inner
dialer, and on it one encrypted stream to the destination.

    client data --seal--> [salt | header | chunks] --TCP--> server --> destination
    client      <-open--- [salt | chunks]          <--TCP-- server <--

Shadowsocks has no handshake: the dial succeeds once TCP to the server is up, and a wrong
key only shows when the server drops the connection (it must not answer probes). The
request header goes out together with the client's first bytes, in one write (SIP022
asks for that, and it keeps the first packet's size from being a fixed, recognisable
number); when the client sends nothing within FIRST_DATA_WAIT, the header goes alone.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from ..base import Dialer, DialError, Endpoint, Failure, Op, Stream
from ..guard import DestinationRefused
from .codec import ClientCodec, SaltPool, StreamError
from .outline import OutlineConfig, OutlineKey, OutlineKeyError, fetch_config, read_outline_config
from .server import ShadowsocksServer

__all__ = ["FIRST_DATA_WAIT", "OutlineDialer", "ShadowsocksDialer", "ShadowsocksStream"]

log = logging.getLogger("detour.shadowsocks")

FIRST_DATA_WAIT = 0.02
_READ = 256 * 1024


class ShadowsocksDialer:
    def __init__(
        self,
        inner: Dialer,
        server: ShadowsocksServer,
        *,
        salts: SaltPool | None = None,
        first_data_wait: float = FIRST_DATA_WAIT,
    ) -> None:
        self.inner = inner
        self.server = server
        # Server salts seen lately, shared by this route's connections (replays).
        self._salts = salts if salts is not None else SaltPool()
        self._wait = first_data_wait

    async def dial(self, target: Endpoint) -> Stream:
        server = self.server
        try:
            codec = ClientCodec(server.key, target, salts=self._salts)
        except ValueError as exc:  # a name Shadowsocks cannot carry (over 255 bytes)
            raise DialError(Failure.PROXY_PROTOCOL_ERROR, Op.CONNECT, str(exc)) from None
        try:
            stream = await self.inner.dial(server.address)
        except DestinationRefused:
            raise  # a server detour may not dial: the caller's words
        except DialError as exc:
            raise DialError(
                exc.failure, exc.op, f"shadowsocks server {server.address}: {exc.detail}"
            ) from None
        return ShadowsocksStream(stream, codec, self._wait)

    def __repr__(self) -> str:
        return f"ShadowsocksDialer({self.server!r})"


class ShadowsocksStream(Stream):
    """One connection through a Shadowsocks server, as a plain byte stream."""

    def __init__(self, inner: Stream, codec: ClientCodec, first_data_wait: float) -> None:
        self.inner = inner
        self._codec = codec
        self._plain = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        if first_data_wait > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(first_data_wait, self._send_header_alone)
        else:
            self._send_header_alone()

    def _send_header_alone(self) -> None:
        self._timer = None
        if not self._codec.sent_request and not self.inner.is_closing():
            try:
                self.inner.write(self._codec.request())
            except ConnectionError:
                pass  # the next read or write reports the lost connection

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # reading -------------------------------------------------------------------------------

    async def read(self, n: int = 65536) -> bytes:
        while not self._plain:
            data = await self.inner.read(_READ)
            if not data:
                if self._codec.truncated():
                    raise ConnectionResetError(
                        "shadowsocks: the server's stream ended inside a chunk"
                    )
                return b""
            try:
                plain = self._codec.open(data)
            except StreamError as exc:
                self.inner.abort()
                raise ConnectionResetError(f"shadowsocks: {exc.reason}") from None
            if len(plain) <= n and not self._plain:
                if plain:
                    return plain
                continue
            self._plain += plain
        if n >= len(self._plain):
            data = bytes(self._plain)
            self._plain.clear()
        else:
            data = bytes(self._plain[:n])
            del self._plain[:n]
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self._plain[:0] = data

    # writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._codec.sent_request:
            self._cancel_timer()
            self.inner.write(self._codec.request(data))
        else:
            self.inner.write(self._codec.seal(data))

    async def drain(self) -> None:
        await self.inner.drain()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        if not self._codec.sent_request:
            self._cancel_timer()
            self.inner.write(self._codec.request())
        self.inner.write_eof()

    # closing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._cancel_timer()
        self.inner.close()

    def abort(self) -> None:
        self._cancel_timer()
        self.inner.abort()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)


class OutlineDialer:
    """The `ssconf://` layer: fetch the dynamic key's config (through the inner dialer),
    then dial its Shadowsocks server. The config is fetched on first use and again after
    `refresh` seconds or when its server cannot be reached (at most every `retry`
    seconds); a fetch that fails keeps the last config that worked."""

    def __init__(
        self,
        inner: Dialer,
        key: OutlineKey,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        refresh: float = 3600.0,
        retry: float = 30.0,
        parse_ss: Callable[[str], ShadowsocksServer],
    ) -> None:
        self.inner = inner
        self.key = key
        self._tls = tls
        self._timeout = timeout
        self._refresh = refresh
        self._retry = retry
        self._parse_ss = parse_ss
        self._salts = SaltPool()
        self._server: ShadowsocksServer | None = None
        self._config: OutlineConfig | None = None
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    @property
    def server(self) -> ShadowsocksServer | None:
        """The server of the last config fetched (None before the first fetch)."""
        return self._server

    async def _current(self, stale: bool = False) -> ShadowsocksServer:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            due = age >= (self._retry if stale else self._refresh)
            if self._server is not None and not due:
                return self._server
            try:
                body = await fetch_config(self.inner, self.key.url, self._tls, self._timeout)
                config = read_outline_config(body, self._parse_ss)
            except (DialError, OutlineKeyError, TimeoutError) as exc:
                self._fetched_at = time.monotonic()  # not again before `retry` / `refresh`
                if self._server is not None:
                    log.warning(
                        "ssconf %s: %s; keeping the config fetched before", self.key.host, _why(exc)
                    )
                    return self._server
                raise _fetch_failed(self.key, exc) from None
            server = config.tcp
            if self._server is not None and server != self._server:
                log.info("ssconf %s: the key now names %s", self.key.host, server)
            self._server, self._config, self._fetched_at = server, config, time.monotonic()
            return server

    async def current_udp(self) -> ShadowsocksServer:
        """The server the key's config names for UDP now (its `udp` part, else the TCP
        server); DialError when that part cannot be used."""
        await self._current()
        config = self._config
        assert config is not None
        try:
            return config.udp_server
        except OutlineKeyError as exc:
            raise DialError(
                Failure.PROXY_PROTOCOL_ERROR, Op.CONNECT, f"ssconf {self.key.host}: {exc}"
            ) from None

    async def dial(self, target: Endpoint) -> Stream:
        server = await self._current()
        try:
            return await ShadowsocksDialer(self.inner, server, salts=self._salts).dial(target)
        except DialError as exc:
            if exc.op not in (Op.CONNECT, Op.RESOLVE):
                raise
            newer = await self._current(stale=True)
            if newer == server:
                raise
            return await ShadowsocksDialer(self.inner, newer, salts=self._salts).dial(target)

    def __repr__(self) -> str:
        return f"OutlineDialer({self.key!r})"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "fetching the config timed out"
    return str(exc)


def _fetch_failed(key: OutlineKey, exc: BaseException) -> DialError:
    if isinstance(exc, DialError):
        return DialError(exc.failure, exc.op, f"ssconf {key.host}: {exc.detail}")
    if isinstance(exc, TimeoutError):
        return DialError(Failure.TIMEOUT, Op.HTTP_ROUND_TRIP, f"ssconf {key.host}: {_why(exc)}")
    return DialError(Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, f"ssconf {key.host}: {exc}")
