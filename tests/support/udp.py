"""A minimal SOCKS5 UDP client for tests: UDP ASSOCIATE over a TCP control connection, then
datagrams with the RFC 1928 §7 header to the relay address the proxy answered; and an echo
exchange by PySocks' own UDP socket, a client that is not detour's code."""

from __future__ import annotations

import asyncio
import socket
import struct

import socks  # PySocks, a real SOCKS5 client (pysocks_echo)

from transports import Endpoint
from transports.udp import encode_datagram, parse_datagram


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait((data, addr))


class UdpClient:
    """One association: `send(payload, target)`, `receive()` -> (payload, source)."""

    def __init__(self, reader, writer, relay: tuple[str, int], inbox: _Inbox, reply: bytes):
        self.reader = reader
        self.writer = writer
        self.relay = relay
        self.inbox = inbox
        self.reply = reply

    def send(self, payload: bytes, target: Endpoint, frag: int = 0) -> None:
        self.send_raw(encode_datagram(target, payload, frag))

    def send_raw(self, data: bytes) -> None:
        assert self.inbox.transport is not None
        self.inbox.transport.sendto(data, self.relay)

    async def receive(self, timeout: float = 5.0) -> tuple[bytes, Endpoint]:
        data, _addr = await asyncio.wait_for(self.inbox.queue.get(), timeout)
        datagram = parse_datagram(data)
        return datagram.payload, datagram.address

    async def echo(self, payload: bytes, target: Endpoint, timeout: float = 5.0) -> bytes:
        self.send(payload, target)
        data, _source = await self.receive(timeout)
        return data

    async def close(self) -> None:
        if self.inbox.transport is not None:
            self.inbox.transport.close()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def associate(
    proxy: tuple[str, int],
    *,
    username: str | None = None,
    password: str | None = None,
    bind: str = "127.0.0.1",
) -> UdpClient:
    """UDP ASSOCIATE through the SOCKS5 proxy at `proxy`; AssertionError when refused."""
    reader, writer = await asyncio.open_connection(*proxy)
    if username is not None:
        writer.write(b"\x05\x01\x02")
        assert await reader.readexactly(2) == b"\x05\x02"
        user, pw = username.encode(), (password or "").encode()
        writer.write(bytes([1, len(user)]) + user + bytes([len(pw)]) + pw)
        assert await reader.readexactly(2) == b"\x01\x00", "login refused"
    else:
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(bind, 0))
    port = transport.get_extra_info("sockname")[1]
    #        v5 UDP RSV IP4 + our address and port
    writer.write(b"\x05\x03\x00\x01" + socket.inet_aton(bind) + struct.pack("!H", port))
    head = await reader.readexactly(4)
    if head[1] != 0:
        transport.close()
        writer.close()
        raise AssertionError(f"UDP ASSOCIATE refused: reply {head[1]}")
    assert head[3] == 1, head
    raw = await reader.readexactly(6)
    relay = (socket.inet_ntoa(raw[:4]), struct.unpack("!H", raw[4:])[0])
    return UdpClient(reader, writer, relay, inbox, head + raw)


def pysocks_echo(proxy: tuple[str, int], target: Endpoint, payloads: list[bytes]) -> list[bytes]:
    """PySocks' socksocket(type=SOCK_DGRAM): UDP ASSOCIATE, then sendto/recvfrom."""
    s = socks.socksocket(type=socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, proxy[0], proxy[1])
    s.settimeout(5)
    try:
        answers = []
        for payload in payloads:
            s.sendto(payload, (target.host, target.port))
            data, _addr = s.recvfrom(65535)
            answers.append(data)
        return answers
    finally:
        s.close()
