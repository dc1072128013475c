"""Carrying test traffic as MTProto, for the tgws tests: the tgws layer passes only streams
that begin with an obfuscated2 init and consist of whole MTProto packets, so an integrity
exchange (tests/support/integrity.py) goes through two adapters that speak it:

    integrity client --plain--> Wrapper --SOCKS5 via detour, obfuscated2 + intermediate-->
        ... web endpoint --> Unwrapper --plain--> integrity origin

Each adapter pumps both ways and passes a half-close on: a plain end of stream becomes the
end of the MTProto stream (which tgws turns into the WebSocket's Close) and back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from tests.support.clients import open_socks5
from transports.mtproto import (
    INIT_LEN,
    Obfuscation,
    PacketReader,
    Tag,
    accept,
    encode_packet,
    initiate,
)

PACKET = 256 * 1024  # plain bytes per MTProto packet
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


async def _wrap(src: asyncio.StreamReader, dst: asyncio.StreamWriter, ob: Obfuscation) -> None:
    """Plain bytes -> encrypted intermediate packets, then the end of stream."""
    with contextlib.suppress(ConnectionError):
        while data := await src.read(PACKET):
            dst.write(ob.encrypt(encode_packet(Tag.INTERMEDIATE, data)))
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


async def _unwrap(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, ob: Obfuscation, tag: Tag
) -> None:
    """Encrypted packets -> their payloads as plain bytes, then the end of stream."""
    reader = PacketReader(tag)
    with contextlib.suppress(ConnectionError):
        while data := await src.read(1 << 20):
            for payload in reader.feed(ob.decrypt(data)):
                dst.write(payload)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


async def _pump_both(*pumps) -> None:
    await asyncio.gather(*pumps, return_exceptions=True)


def _kept(handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
    """Run each connection's handler as a task this module holds: the event loop holds tasks
    only weakly, and a handler waiting on streams it alone refers to (a connection it opened,
    after the client's half-close took the accepted socket off the selector) would otherwise
    be collected mid-exchange."""
    tasks: set[asyncio.Task[None]] = set()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handler(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return accepted


class Adapter:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    @property
    def address(self) -> tuple[str, int]:
        return self.server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_unwrapper(origin: tuple[str, int]) -> Adapter:
    """The DC side: takes an MTProto stream, passes its payloads to `origin` and back."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header, ob = accept(await reader.readexactly(INIT_LEN))
            up_reader, up_writer = await asyncio.open_connection(*origin, limit=1 << 20)
        except (ValueError, OSError, asyncio.IncompleteReadError):
            writer.close()
            return

        async def back() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(PACKET):
                    writer.write(ob.encrypt(encode_packet(header.tag, data)))
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()  # the origin ended: so does the DC's side

        try:
            await _pump_both(_unwrap(reader, up_writer, ob, header.tag), back())
        finally:
            up_writer.close()
            writer.close()

    return Adapter(await asyncio.start_server(_kept(handle), "127.0.0.1", 0, limit=1 << 20))


async def start_wrapper(socks: tuple[str, int], dc: tuple[str, int], dc_id: int = 2) -> Adapter:
    """The client side: takes plain connections, carries each to `dc` through the SOCKS5
    proxy at `socks` as an obfuscated MTProto stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            mt_reader, mt_writer = await open_socks5(socks, *dc)
        except (OSError, ConnectionError):
            writer.close()
            return
        init, ob = initiate(Tag.INTERMEDIATE, dc_id)
        mt_writer.write(init)
        try:
            await _pump_both(
                _wrap(reader, mt_writer, ob), _unwrap(mt_reader, writer, ob, Tag.INTERMEDIATE)
            )
        finally:
            mt_writer.close()
            writer.close()

    return Adapter(await asyncio.start_server(_kept(handle), "127.0.0.1", 0, limit=1 << 20))
