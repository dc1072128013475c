"""The lab's UDP services: what a call needs from a messenger's servers, in miniature.

    StunServer   answers RFC 5389 binding requests with the address it saw (XOR-MAPPED-ADDRESS),
                 as the services' STUN endpoints do before a call; anything else is ignored
    UdpEcho      a "call relay": sends every datagram back to whoever sent it, as it came

Both are asyncio datagram servers that count what they got, so a test can tell "the datagram
never arrived" (a censor dropped it) from "the answer was lost"; `start_udp` opens one on a
host and port (0: any free port) and returns it running.
"""

from __future__ import annotations

import asyncio
import logging

from transports import Endpoint
from transports.stun import BINDING_REQUEST, binding_response, parse_message
from transports.wire import ProtocolError

__all__ = ["StunServer", "UdpEcho", "UdpService", "start_udp"]

log = logging.getLogger("detour.lab")


class UdpService(asyncio.DatagramProtocol):
    """A datagram server: its address once started, what it received and answered."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.answered = 0
        self.ignored = 0

    @property
    def address(self) -> Endpoint:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return Endpoint(host, port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        self.received += 1
        answer = self.answer(data, Endpoint(addr[0], addr[1]))
        if answer is None:
            self.ignored += 1
            return
        assert self.transport is not None
        self.transport.sendto(answer, addr)
        self.answered += 1

    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UdpEcho(UdpService):
    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        return data


class StunServer(UdpService):
    def __init__(self, software: str = "detour lab") -> None:
        super().__init__()
        self.software = software

    def answer(self, data: bytes, source: Endpoint) -> bytes | None:
        try:
            message = parse_message(data)
        except ProtocolError:
            return None
        if message.type != BINDING_REQUEST:
            return None
        return binding_response(message.transaction, source, self.software)


async def start_udp(service: UdpService, host: str = "127.0.0.1", port: int = 0) -> UdpService:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: service, local_addr=(host, port))
    return service
