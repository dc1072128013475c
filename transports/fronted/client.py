"""`front:ACCESS_KEY`: reach the destination through a detour relay behind a CDN front.

One dial: connect to the front (through the inner dialer), TLS with the front's name
(certificate checked as for any site), a WebSocket upgrade with the relay's Host, path and
access token, TLS 1.3 inside the WebSocket with the relay's certificate pinned and detour's
client certificate, then one request naming the destination. What comes back is the
destination's stream, end-to-end encrypted between detour and the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import ssl
import tempfile
from pathlib import Path

from ..base import Dialer, DialError, Endpoint, Failure, Op, Stream
from ..tls import TlsStream, tls_connect
from ..websocket import websocket_connect
from .accesskey import AccessKey, access_token
from .protocol import NeedMore, ProtocolError, encode_request, parse_reply

__all__ = ["FrontDialer", "inner_client_context"]

# What a browser sends: the upgrade should look like any web app's WebSocket.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
COOKIE = "__session"


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
    ) -> None:
        self.inner = inner
        self.key = key
        self.outer_tls = tls or ssl.create_default_context()
        self.inner_tls = inner_client_context(key)
        self.handshake_timeout = handshake_timeout

    def __repr__(self) -> str:
        return f"FrontDialer(front={self.key.front!r}, relay={self.key.host!r})"

    async def dial(self, target: Endpoint) -> Stream:
        key = self.key
        try:
            stream = await self.inner.dial(key.address)
        except DialError as exc:
            raise DialError(exc.failure, exc.op, f"front {key.address}: {exc.detail}") from None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                return await self._tunnel(stream, target)
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
            raise DialError(
                Failure.CONNECTION_RESET if isinstance(exc, ConnectionError) else Failure.EOF,
                Op.PROXY_HANDSHAKE,
                f"the tunnel through {key.front} broke: {exc or type(exc).__name__}",
            ) from None

    async def _tunnel(self, stream: Stream, target: Endpoint) -> Stream:
        key = self.key
        outer = await tls_connect(stream, self.outer_tls, key.front, timeout=self.handshake_timeout)
        ws = await websocket_connect(
            outer,
            key.host,
            key.path,
            headers={
                "User-Agent": USER_AGENT,
                "Origin": f"https://{key.host}",
                "Cookie": f"{COOKIE}={access_token(key)}",
            },
            timeout=self.handshake_timeout,
        )
        try:
            inner = await tls_connect(ws, self.inner_tls, None, timeout=self.handshake_timeout)
        except DialError as exc:
            raise DialError(exc.failure, Op.PROXY_HANDSHAKE, f"relay: {exc.detail}") from None
        self._check_pin(inner)
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
