"""Destination servers for tests and benchmarks: what detour's clients reach through it.

- TestCA: a throw-away certificate authority (the lab's, helper/lab/ca.py), so real clients
  (curl --cacert, Python ssl) verify HTTPS through the proxy as they would for real.
- BackgroundLoop: an asyncio loop in a thread. Origins run there, so synchronous tests (curl,
  PySocks in subprocesses or threads) and asyncio tests use the same servers.
- Origins: an HTTP(S) server (aiohttp), an echo server, and an integrity server that streams
  seeded random data while hashing what it receives (see tests/support/integrity.py).
- A recording relay in front of an origin: it keeps every byte clients send, so a test can
  assert what went over the wire (TLS record boundaries after `tlsfrag`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from helper.lab.ca import LabCA

T = TypeVar("T")


class TestCA(LabCA):
    """A certificate authority that exists only for one test session."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "detour test CA")


class BackgroundLoop:
    """An event loop running in a daemon thread until `close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="origins", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# --- servers --------------------------------------------------------------------------------


@dataclass
class Origin:
    host: str
    port: int
    server: Any

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _http_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from origin {request.host}{request.path_qs}\n")

    async def headers(request: web.Request) -> web.Response:
        lines = [f"{name}: {value}" for name, value in request.headers.items()]
        return web.Response(text=f"{request.method} {request.path_qs}\n" + "\n".join(lines) + "\n")

    async def sized(request: web.Request) -> web.Response:
        size = int(request.match_info["size"])
        return web.Response(body=random.Random(size).randbytes(size))

    async def echo_body(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=hashlib.sha256(body).hexdigest() + f" {len(body)}\n")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/headers", headers)
    app.router.add_get("/bytes/{size:\\d+}", sized)
    app.router.add_post("/sha256", echo_body)
    app.router.add_get("/{tail:.*}", index)
    return app


async def start_http(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> Origin:
    runner = web.AppRunner(_http_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    return Origin(host, runner.addresses[0][1], runner)


async def start_echo(host: str = "127.0.0.1") -> Origin:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to echo to
        finally:
            writer.close()

    server = await asyncio.start_server(echo, host, 0)
    return Origin(host, server.sockets[0].getsockname()[1], server)


async def start_integrity(host: str = "127.0.0.1") -> Origin:
    """See tests/support/integrity.py for the exchange this server takes part in.
    `server.received`: how many payload bytes each client sent, by its seed + 1."""
    from .integrity import serve_integrity

    received: dict[int, int] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_integrity(reader, writer, received)

    server = await asyncio.start_server(serve, host, 0, limit=1 << 20)
    server.received = received  # type: ignore[attr-defined]
    return Origin(host, server.sockets[0].getsockname()[1], server)


async def start_recorder(upstream: tuple[str, int], host: str = "127.0.0.1") -> Origin:
    """A TCP relay to `upstream` that records what each client sent, in `server.received`
    (one bytearray per connection, in accept order). `stop` ends the relays still running."""
    received: list[bytearray] = []
    relays: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log=None) -> None:
        try:
            while data := await reader.read(65536):
                if log is not None:
                    log += data
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError):
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.add(task)
        log = bytearray()
        received.append(log)
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
            await asyncio.gather(pump(reader, up_writer, log), pump(up_reader, writer))
        finally:
            # Also when cancelled by stop(): a relay left behind would leak both sockets
            # into a closed event loop.
            writer.close()
            if up_writer is not None:
                up_writer.close()
            relays.discard(task)

    server = await asyncio.start_server(relay, host, 0)
    server.received = received  # type: ignore[attr-defined]
    server.relays = relays  # type: ignore[attr-defined]
    return Origin(host, server.sockets[0].getsockname()[1], server)


async def stop(origin: Origin) -> None:
    if isinstance(origin.server, web.AppRunner):
        await origin.server.cleanup()
    else:
        origin.server.close()
        relays = getattr(origin.server, "relays", set())
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        await origin.server.wait_closed()
        await asyncio.sleep(0)  # let the transports closed above finish closing
