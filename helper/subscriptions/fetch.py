"""Fetching a subscription's list: one HTTPS GET through a route, redirects to other https://
URLs followed (a few), the body of a 200 answer read whole.

A list larger than the limit (MAX_FETCH, the same as the largest list read) fails with
"the list is too large" -- it is never cut short and read as a shorter list; so does an
answer that ends before the length it announced. Errors name the server's host, never the
URL's path or query (the subscription's key). Sans-IO where it can be: `read_answer` takes
the bytes of a whole answer."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from transports import Dialer, DialError, Endpoint, Failure, Op
from transports.tls import tls_connect
from transports.wire import ProtocolError, parse_response_head

from .formats import MAX_LIST, SubscriptionError

__all__ = ["MAX_FETCH", "fetch_list", "read_answer"]

MAX_FETCH = MAX_LIST
MAX_HEAD = 16 * 1024
MAX_REDIRECTS = 3
_CHUNK = 65536


def too_large(limit: int) -> SubscriptionError:
    return SubscriptionError(
        f"the list is too large (more than {limit // 1024} KiB, the most detour reads); "
        "nothing of it was used"
    )


async def fetch_list(
    dialer: Dialer, url: str, tls: ssl.SSLContext | None, timeout: float, limit: int = MAX_FETCH
) -> bytes:
    """The body of `url`'s 200 answer. DialError for what the route or the server did
    (another route may do better); SubscriptionError for a list that is too large."""
    context = tls or ssl.create_default_context()
    async with asyncio.timeout(timeout):
        for _ in range(MAX_REDIRECTS + 1):
            host = urlsplit(url).hostname or ""
            status, location, body = read_answer(
                await _get(dialer, url, context, timeout, limit), limit, host
            )
            if status in (301, 302, 303, 307, 308) and location:
                if not location.startswith("https://"):
                    raise DialError(
                        Failure.HTTP_BLOCKPAGE, Op.HTTP_ROUND_TRIP,
                        f"{host} redirected to a non-HTTPS address",
                    )  # fmt: skip
                url = location
                continue
            if status != 200:
                raise DialError(
                    Failure.PROXY_REFUSED, Op.HTTP_ROUND_TRIP, f"{host} answered HTTP {status}"
                )
            return body
    raise _bad(f"{host} redirected too often")


async def _get(
    dialer: Dialer, url: str, context: ssl.SSLContext, timeout: float, limit: int
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
        from transports.base import classify_os_error

        raise classify_os_error(exc, Op.HTTP_ROUND_TRIP) from None
    finally:
        tls.close()
    return bytes(data)


def read_answer(
    data: bytes, limit: int = MAX_FETCH, host: str = "the server"
) -> tuple[int, str, bytes]:
    """(status, Location, body) of a whole HTTP/1.1 answer; the body whole or an error."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator or len(head) > MAX_HEAD:
        raise _bad(f"{host} sent no HTTP answer")
    try:
        response = parse_response_head(head + separator)
    except ProtocolError:
        raise _bad(f"{host} sent no HTTP answer") from None
    if "chunked" in (response.header("transfer-encoding") or "").lower():
        body = _dechunk(body, host)
    elif (length := response.content_length) is not None:
        if length > limit:
            raise too_large(limit)
        if len(body) < length:
            raise _bad(f"{host}'s answer ended early ({len(body)} of {length} bytes)")
        body = body[:length]
    if len(body) > limit:
        raise too_large(limit)
    return response.status, response.header("location") or "", body


def _dechunk(body: bytes, host: str) -> bytes:
    out = bytearray()
    while True:
        size_line, separator, rest = body.partition(b"\r\n")
        if not separator:
            raise _bad(f"{host}'s answer ended early (inside a chunk)")
        try:
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
        except ValueError:
            raise _bad(f"{host} sent a bad chunk") from None
        if size == 0:
            return bytes(out)
        if len(rest) < size + 2:
            raise _bad(f"{host}'s answer ended early (inside a chunk)")
        out += rest[:size]
        body = rest[size + 2 :]


def _bad(detail: str) -> DialError:
    return DialError(Failure.PROXY_PROTOCOL_ERROR, Op.HTTP_ROUND_TRIP, detail)
