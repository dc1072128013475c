"""The probe of a Telegram DC (`mtproto://ADDRESS:PORT`): over the route's stream, the first
request of MTProto's key exchange, which every DC (and, through `tgws`, every web endpoint)
answers without an account -- req_pq_multi with a fresh nonce, answered by resPQ with that
nonce, a pq to factor and the fingerprints of the server's RSA keys.

It goes obfuscated (an obfuscated2 init, intermediate framing), as Telegram's apps send it,
so a DPI that drops or resets MTProto shows here, and a route that only gets as far as a TCP
connection (or a WebSocket that leads nowhere) does not pass.
"""

from __future__ import annotations

import os

from transports import DialError, Failure, Op, Stream
from transports.mtproto import DEFAULT_DCS, PacketReader, Tag, encode_packet, initiate
from transports.mtproto import messages as tl
from transports.mtproto.framing import FramingError

__all__ = ["PqExchange", "request_pq"]

READ_SIZE = 65536


def _failed(failure: Failure, detail: str) -> DialError:
    return DialError(failure, Op.MTPROTO_ROUND_TRIP, detail)


class PqExchange:
    """req_pq_multi over one obfuscated connection: the first request and its checked answer,
    then, for a freeze check, as many more as it takes for the DC to send enough bytes (each
    answered by a resPQ of its own: about 90 bytes a request)."""

    def __init__(self, stream: Stream, host: str) -> None:
        self.stream = stream
        dc = DEFAULT_DCS.lookup(host)
        self.init, self.obfuscation = initiate(Tag.INTERMEDIATE, dc.id if dc is not None else 0)
        self.reader = PacketReader(Tag.INTERMEDIATE)
        self.first_size = 0  # bytes of the first answer, framing included
        self.received = 0  # bytes from the server
        self.complete = 0  # answers received
        self._next_id = tl.message_id()

    def _request(self) -> bytes:
        self._next_id += 4  # message ids grow, and stay divisible by 4
        request = tl.unencrypted(tl.req_pq_multi(os.urandom(16)), self._next_id)
        return self.obfuscation.encrypt(encode_packet(Tag.INTERMEDIATE, request))

    async def first(self) -> tl.ResPQ:
        """Send req_pq_multi and return the checked resPQ. Raises DialError(...,
        mtproto_round_trip) for an answer that is none; the caller bounds the time and turns
        OS errors into the taxonomy."""
        nonce = os.urandom(16)
        self._next_id += 4
        request = tl.unencrypted(tl.req_pq_multi(nonce), self._next_id)
        stream = self.stream
        stream.write(self.init + self.obfuscation.encrypt(encode_packet(Tag.INTERMEDIATE, request)))
        await stream.drain()
        first = b""
        while True:
            data = await stream.read(READ_SIZE)
            if not data:
                raise _failed(Failure.EOF, "closed without answering MTProto's first request")
            self.received += len(data)
            first = first or data[:16]
            try:
                packets = self.reader.feed(self.obfuscation.decrypt(data))
            except FramingError:
                raise _not_mtproto(first) from None
            if packets:
                break
        self.complete = len(packets)
        self.first_size = self.received  # the first read holds the first answer
        payload = packets[0]
        code = tl.transport_error(payload)
        if code is not None:
            raise _failed(Failure.UNKNOWN, f"the server answered MTProto transport error {code}")
        try:
            _, body = tl.parse_unencrypted(payload)
            answer = tl.parse_res_pq(body)
        except tl.MessageError:
            raise _not_mtproto(first) from None
        if answer.nonce != nonce:
            raise _failed(Failure.UNKNOWN, "the resPQ answers another request (wrong nonce)")
        if answer.pq_value < 6 or not answer.fingerprints:
            raise _failed(Failure.UNKNOWN, "the resPQ carries no pq or no key fingerprint")
        return answer

    def more(self, count: int) -> bytes:
        """`count` more requests, to send in one write."""
        return b"".join(self._request() for _ in range(count))

    def feed(self, data: bytes) -> None:
        """Bytes from the server after the first answer (a freeze check counts them);
        raises FramingError for bytes that are no MTProto packets."""
        self.received += len(data)
        self.complete += len(self.reader.feed(self.obfuscation.decrypt(data)))


async def request_pq(stream: Stream, host: str) -> tl.ResPQ:
    """Send req_pq_multi over `stream` (to the DC at `host`) and return the checked resPQ."""
    return await PqExchange(stream, host).first()


def _not_mtproto(first: bytes) -> DialError:
    if first.startswith(b"HTTP/"):
        return _failed(Failure.UNKNOWN, "an HTTP answer instead of MTProto's (a block page?)")
    return _failed(Failure.UNKNOWN, "the answer is not MTProto's resPQ")
