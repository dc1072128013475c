"""Carrying test traffic as MTProto, for the tgws, MTProto endpoint and `mtproxy:` tests:
the layers pass only streams that begin with an obfuscated2 init and consist of whole
MTProto packets, so an integrity exchange (tests/support/integrity.py) goes through two
adapters that speak it:

    integrity client --plain--> Wrapper --SOCKS5 via detour, obfuscated2 + intermediate-->
        ... web endpoint, MTProto proxy ... --> Unwrapper (the "DC") --plain--> integrity origin

Each adapter pumps both ways and passes a half-close on: a plain end of stream becomes the
end of the MTProto stream (which tgws turns into the WebSocket's Close) and back. Packets
carry no padding (with padded intermediate too), so the bytes come through unchanged.
`endpoint_section` is the config of detour's MTProto endpoint with such a DC behind it.
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


def _no_padding(n: int) -> bytes:
    return bytes(n)


def _packet(tag: Tag, data: bytes) -> bytes:
    return encode_packet(tag, data, urandom=_no_padding)


async def _wrap(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, ob: Obfuscation, tag: Tag
) -> None:
    """Plain bytes -> encrypted packets, then the end of stream."""
    with contextlib.suppress(ConnectionError):
        while data := await src.read(PACKET):
            dst.write(ob.encrypt(_packet(tag, data)))
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
                    writer.write(ob.encrypt(_packet(header.tag, data)))
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()  # the origin ended: so does the DC's side

        try:
            await _pump_both(_unwrap(reader, up_writer, ob, header.tag), back())
        finally:
            up_writer.close()
            writer.close()

    return Adapter(await asyncio.start_server(_kept(handle), "127.0.0.1", 0, limit=1 << 20))


async def start_wrapper(
    socks: tuple[str, int], dc: tuple[str, int], dc_id: int = 2, tag: Tag = Tag.INTERMEDIATE
) -> Adapter:
    """The client side: takes plain connections, carries each to `dc` through the SOCKS5
    proxy at `socks` as an obfuscated MTProto stream framed as `tag` says."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            mt_reader, mt_writer = await open_socks5(socks, *dc)
        except (OSError, ConnectionError):
            writer.close()
            return
        init, ob = initiate(tag, dc_id)
        mt_writer.write(init)
        try:
            await _pump_both(_wrap(reader, mt_writer, ob, tag), _unwrap(mt_reader, writer, ob, tag))
        finally:
            mt_writer.close()
            writer.close()

    return Adapter(await asyncio.start_server(_kept(handle), "127.0.0.1", 0, limit=1 << 20))


def endpoint_section(
    secrets: str, dc: tuple[str, int], mask: tuple[str, int] | str, **keys: str
) -> str:
    """Config text for detour's MTProto endpoint on a free loopback port (with the telegram
    service on loopback addresses): `secrets` as TOML's inline table's inside, `dc` for DC 2
    (an unwrapper's address), `mask` the site an `ee` secret imitates; `keys`: more of the
    section's keys, their values as TOML (`handshake_timeout='"2s"'`)."""
    mask_text = mask if isinstance(mask, str) else f"{mask[0]}:{mask[1]}"
    more = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return (
        '[[service]]\nname = "telegram"\ncidrs = ["127.0.0.0/8"]\n\n'
        '[mtproto_proxy]\nlisten = "127.0.0.1:0"\n'
        f"secrets = {{ {secrets} }}\n"
        f'mask = "{mask_text}"\n'
        f'dcs = {{ 2 = "{dc[0]}:{dc[1]}" }}\n'
        "max_per_client = 0\n" + more
    )
