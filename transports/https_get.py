"""One HTTPS GET through a Dialer, its answer read whole: what an Outline dynamic key
(`ssconf://`) and a subscription list are fetched with.

Redirects to other https:// URLs are followed (a few). The body of the answer is read whole
or not at all: larger than the caller's limit is the caller's error (`too_large`), and an
answer that ends before the length it announced (or inside a chunk) is an error too -- never
a shorter body read as if whole. Errors name the server by `who` (its host), never the URL's
path or query, which are the key. `read_answer` is sans-IO: the bytes of a whole answer in,
(status, Location, body) out."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from .base import Dialer, DialError, Endpoint, Failure, Op, classify_os_error
from .tls import tls_connect
from .wire import ProtocolError, parse_response_head

__all__ = ["MAX_HEAD", "MAX_REDIRECTS", "https_get", "read_answer"]

MAX_HEAD = 16 * 1024
MAX_REDIRECTS = 3
_CHUNK = 65536

TooLarge = Callable[[int], Exception]  # the limit -> the caller's error


def _too_large(limit: int) -> Exception:
    return _bad(f"the answer is larger than {limit // 1024} KiB")


async def https_get(
    dialer: Dialer,
    url: str,
    tls: ssl.SSLContext | None,
    timeout: float,
    limit: int,
    *,
    who: Callable[[str], str] = lambda host: host,
    too_large: TooLarge = _too_large,
) -> bytes:
    """The body of `url`'s 200 answer. DialError for what the route or the server did;
    `too_large(limit)` raised for a body over `limit`."""
    context = tls or ssl.create_default_context()
    server = who(urlsplit(url).hostname or "")
    async with asyncio.timeout(timeout):
        for _ in range(MAX_REDIRECTS + 1):
            server = who(urlsplit(url).hostname or "")
            data = await _get(dialer, url, context, timeout, limit, too_large)
            status, location, body = read_answer(data, limit, server, too_large)
            if status in (301, 302, 303, 307, 308) and location:
                if not location.startswith("https://"):
                    raise DialError(
                        Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP,
                        f"{server} redirected to a non-HTTPS address",
                    )  # fmt: skip
                url = location
                continue
            if status != 200:
                raise DialError(
                    Failure.PROXY_REFUSED, Op.HTTP_ROUND_TRIP, f"{server} answered HTTP {status}"
                )
            return body
    raise _bad(f"{server} redirected too often")


async def _get(
    dialer: Dialer,
    url: str,
    context: ssl.SSLContext,
    timeout: float,
    limit: int,
    too_large: TooLarge,
) -> bytes:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or 443
    except ValueError:
        raise DialError(Failure.UNKNOWN, Op.CONNECT, "the URL has an invalid port") from None
    stream = await dialer.dial(Endpoint(host, port))
    try:
        tls = await tls_connect(stream, context, host, timeout=timeout)
    except ValueError as exc:
        stream.abort()
        raise DialError(Failure.SSL_FAILED_HANDSHAKE, Op.TLS_HANDSHAKE, str(exc)) from None
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        name = f"[{host}]" if ":" in host else host
        authority = name if port == 443 else f"{name}:{port}"
        tls.write(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\n"
            "User-Agent: detour\r\nConnection: close\r\n\r\n".encode()
        )
        await tls.drain()
        data = bytearray()
        while chunk := await tls.read(_CHUNK):
            data += chunk
            if len(data) > limit + MAX_HEAD:
                raise too_large(limit)
    except OSError as exc:
        raise classify_os_error(exc, Op.HTTP_ROUND_TRIP) from None
    finally:
        tls.close()
    return bytes(data)


def read_answer(
    data: bytes, limit: int, who: str = "the server", too_large: TooLarge = _too_large
) -> tuple[int, str, bytes]:
    """(status, Location, body) of a whole HTTP/1.1 answer; the body whole or an error."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator or len(head) > MAX_HEAD:
        raise _bad(f"{who} sent no HTTP answer")
    try:
        response = parse_response_head(head + separator)
    except ProtocolError:
        raise _bad(f"{who} sent no HTTP answer") from None
    if "chunked" in (response.header("transfer-encoding") or "").lower():
        body = _dechunk(body, who)
    elif (length := response.content_length) is not None:
        if length > limit:
            raise too_large(limit)
        if len(body) < length:
            raise _bad(f"{who}'s answer ended early ({len(body)} of {length} bytes)")
        body = body[:length]
    if len(body) > limit:
        raise too_large(limit)
    return response.status, response.header("location") or "", body


def _dechunk(body: bytes, who: str) -> bytes:
    out = bytearray()
    while True:
        size_line, separator, rest = body.partition(b"\r\n")
        if not separator:
            raise _bad(f"{who}'s answer ended early (inside a chunk)")
        try:
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
        except ValueError:
            raise _bad(f"{who} sent a bad chunk") from None
        if size == 0:
            return bytes(out)
        if len(rest) < size + 2:
            raise _bad(f"{who}'s answer ended early (inside a chunk)")
        out += rest[:size]
        body = rest[size + 2 :]


def _bad(detail: str) -> DialError:
    return DialError(Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, detail)
