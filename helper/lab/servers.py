"""The servers behind the censor: mock messaging endpoints, a large-file server, the block
page, and the routes the lab offers (upstream SOCKS5 and HTTP CONNECT proxies, a CDN front).

Each listens on 127.0.0.1 at a port of its own; the censor listens on the host's lab address
and forwards there. What they answer is deliberately simple: enough for a client (and
detour's probes) to tell "reached the service" from every way of not reaching it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from transports import Endpoint
from transports.direct import DirectDialer
from transports.resolver import StaticResolver

from .censor import BLOCK_PAGE
from .dns import LabResolver
from .dnsserver import DnsServer
from .telegram import DcLog, dc_handler, web_endpoint_app

__all__ = ["Backend", "start_backend", "websocket_echo_app"]

log = logging.getLogger("detour.lab")

MAX_DOWNLOAD = 1 << 30
_SESSION = web.AppKey("session", aiohttp.ClientSession)


@dataclass
class Backend:
    """A running server: where the censor should forward, and how to stop it."""

    port: int
    stop: Callable[[], Awaitable[None]]


# --- web servers ----------------------------------------------------------------------------


# Real sites answer a page with kilobytes of headers and markup; the lab's pages are one line,
# so a header of this size gives them a real page's weight (a probe's freeze check then asks
# for a few pages, not a hundred -- docs/routing.md "Seeing a freeze").
PAGE_WEIGHT = "x" * 3000


async def _hello(request: web.Request) -> web.Response:
    return web.Response(
        text=f"hello from {request.host} (lab)\n", headers={"X-Lab-Page-Weight": PAGE_WEIGHT}
    )


async def _download(request: web.Request) -> web.StreamResponse:
    """/bytes/N: N bytes, streamed, to measure a route's rate (or see where it freezes)."""
    size = int(request.match_info["size"])
    if size > MAX_DOWNLOAD:
        raise web.HTTPBadRequest(text=f"at most {MAX_DOWNLOAD} bytes\n")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    # Small writes make small TLS records, as web servers send at the start of a response:
    # a client can read what arrived before a transfer froze.
    block = os.urandom(4 * 1024)
    left = size
    while left:
        chunk = block[: min(len(block), left)]
        await response.write(chunk)
        left -= len(chunk)
    await response.write_eof()
    return response


async def _accept_post(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok\n")


async def _digest(request: web.Request) -> web.Response:
    """POST /digest: a body of any size, read as it streams in; the answer is its length and
    SHA-256 (`LENGTH HEX`), so a large upload can be checked byte for byte."""
    digest, length = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return web.Response(text=f"{length} {digest.hexdigest()}\n")


def web_app(extra: Callable[[web.Application], None] | None = None) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app.router.add_get("/bytes/{size:\\d+}", _download)
    app.router.add_post("/digest", _digest)
    if extra is not None:
        extra(app)
    app.router.add_post("/{tail:.*}", _accept_post)
    app.router.add_get("/{tail:.*}", _hello)
    return app


def blockpage_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=BLOCK_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def telegram_dc_app() -> web.Application:
    """Telegram's data centres answer plain HTTP on 80 and 443 (OONI's telegram test POSTs)."""

    async def dc(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=404, text="")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dc)
    return app


def cdn_app(backends: Mapping[str, tuple[str, int]], local_address: str) -> web.Application:
    """A CDN edge: requests whose Host names a hidden backend are passed to it (HTTP and
    WebSocket); anything else gets the CDN's own page."""

    async def on_startup(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0))
        app[_SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def on_cleanup(app: web.Application) -> None:
        await app[_SESSION].close()

    async def route(request: web.Request) -> web.StreamResponse:
        host = (request.host or "").split(":")[0].lower()
        backend = backends.get(host)
        if backend is None:
            return web.Response(text=f"cdn edge {host}: nothing here\n")
        url = f"http://{backend[0]}:{backend[1]}{request.path_qs}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = request.host  # the backend sees the name the client asked for
        session = request.app[_SESSION]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket_bridge(request, session, url, headers)
        async with session.request(
            request.method, url, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            body = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=body,
                headers={
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
                },
            )

    app = web.Application(client_max_size=16 << 20)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", route)
    return app


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
}


async def _websocket_bridge(
    request: web.Request, session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    protocols = [p for p in protocols if p]
    headers.pop("Sec-WebSocket-Protocol", None)
    try:
        upstream = await session.ws_connect(url, headers=headers, protocols=protocols)
    except (aiohttp.ClientError, OSError):
        return web.Response(status=502, text="backend unavailable\n")
    client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else ())
    await client.prepare(request)

    async def pipe(src: Any, dst: Any) -> None:
        async for message in src:
            if message.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(message.data)
            else:
                break
        await dst.close()

    await asyncio.gather(pipe(client, upstream), pipe(upstream, client), return_exceptions=True)
    await upstream.close()
    return client


def websocket_echo_app() -> web.Application:
    """A hidden backend behind the CDN front: echoes WebSocket messages, greets plain HTTP."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(text=f"hidden backend {request.host}\n")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _serve_telegram_dc(dc: int, events: DcLog) -> Backend:
    """A mock DC: MTProto itself, HTTP passed on to the small web app behind it."""
    http = await _serve_app(telegram_dc_app(), None)
    handle = dc_handler(dc, events, http.port)
    # The loop holds tasks weakly: a handler waiting on a half-closed client (no longer on
    # the selector) and streams only it refers to would be collected mid-exchange.
    tasks: set[asyncio.Task[None]] = set()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)

    async def stop() -> None:
        server.close()
        await server.wait_closed()
        await http.stop()

    return Backend(server.sockets[0].getsockname()[1], stop)


async def _serve_app(app: web.Application, context: ssl.SSLContext | None) -> Backend:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return Backend(runner.addresses[0][1], runner.cleanup)


# --- TCP servers ----------------------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        pass  # the client left; an echo has nobody to answer
    finally:
        writer.close()


async def _serve_dot(resolver: LabResolver | None, context: ssl.SSLContext | None) -> Backend:
    """DNS over TLS (RFC 7858), answered by the honest resolver."""
    server = DnsServer(resolver or LabResolver({}), "127.0.0.1", 0, tls=context)
    await server.start()
    return Backend(server.address[1], server.stop)


async def _serve_echo() -> Backend:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return Backend(server.sockets[0].getsockname()[1], stop)


async def _serve_proxy(dns_table: Mapping[str, list[str]], local_address: str) -> Backend:
    """An upstream proxy outside the censor: detour's own mixed listener (SOCKS5 and HTTP
    CONNECT) with one direct route, resolving names honestly and dialling from an address
    the censor lets through."""
    from helper.config import ListenConfig
    from helper.proxy import ClientServer, MixedListener
    from helper.proxy.mixed import listen_admission
    from helper.routing import Route, Router
    from helper.services import ServiceTable
    from transports import parse_chain
    from transports.guard import AddressPolicy

    dialer = DirectDialer(StaticResolver(dns_table), local_address=local_address)
    chain = parse_chain("direct")
    router = Router([Route("direct", chain, dialer)], ServiceTable([]), "direct")
    config = ListenConfig(mixed=Endpoint("127.0.0.1", 0), idle_timeout=600.0)
    server = ClientServer(router)
    listener = server.add(MixedListener(config, listen_admission(config), AddressPolicy()))
    await server.start()
    return Backend(listener.sockets[0][1], server.stop)


# --- dispatch -------------------------------------------------------------------------------


async def start_backend(
    kind: str,
    *,
    context: ssl.SSLContext | None,
    port: int,
    dns_table: Mapping[str, list[str]],
    local_address: str,
    cdn_backends: Mapping[str, tuple[str, int]],
    doh: Callable[[web.Application], None] | None,
    dot: LabResolver | None = None,
    dc: int = 0,
    dc_events: DcLog | None = None,
    web_dcs: Mapping[int, tuple[str, int]] | None = None,
) -> Backend:
    """Start the server for one (host kind, port). Web servers speak TLS on 443 and plain
    HTTP on other ports; Telegram's data centres speak plain HTTP and MTProto on both (`dc`:
    which one; what they see goes to `dc_events`); its web endpoints carry to `web_dcs`."""
    tls = context if port == 443 else None
    if kind == "https":
        return await _serve_app(web_app(), tls)
    if kind == "bulk":
        return await _serve_app(web_app(), tls)
    if kind == "echo":
        return await _serve_echo()
    if kind == "telegram-dc":
        return await _serve_telegram_dc(dc, dc_events if dc_events is not None else DcLog())
    if kind == "telegram-ws":
        return await _serve_app(web_endpoint_app(web_dcs or {}), context)
    if kind == "blockpage":
        return await _serve_app(blockpage_app(), tls)
    if kind == "doh" and port == 853:
        return await _serve_dot(dot, context)
    if kind == "doh":
        return await _serve_app(web_app(doh), context)
    if kind == "cdn":
        return await _serve_app(cdn_app(cdn_backends, local_address), context)
    if kind in ("socks", "http-proxy"):
        return await _serve_proxy(dns_table, local_address)
    raise ValueError(f"unknown lab host kind {kind!r}")
