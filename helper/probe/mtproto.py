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

__all__ = ["request_pq"]

READ_SIZE = 65536


def _failed(failure: Failure, detail: str) -> DialError:
    return DialError(failure, Op.MTPROTO_ROUND_TRIP, detail)


async def request_pq(stream: Stream, host: str) -> tl.ResPQ:
    """Send req_pq_multi over `stream` (to the DC at `host`) and return the checked resPQ.
    Raises DialError(..., mtproto_round_trip) for an answer that is none; the caller bounds
    the time and turns OS errors into the taxonomy."""
    dc = DEFAULT_DCS.lookup(host)
    init, obfuscation = initiate(Tag.INTERMEDIATE, dc.id if dc is not None else 0)
    nonce = os.urandom(16)
    request = tl.unencrypted(tl.req_pq_multi(nonce), tl.message_id())
    stream.write(init + obfuscation.encrypt(encode_packet(Tag.INTERMEDIATE, request)))
    await stream.drain()
    reader = PacketReader(Tag.INTERMEDIATE)
    first = b""
    while True:
        data = await stream.read(READ_SIZE)
        if not data:
            raise _failed(Failure.EOF, "closed without answering MTProto's first request")
        first = first or data[:16]
        try:
            packets = reader.feed(obfuscation.decrypt(data))
        except FramingError:
            raise _not_mtproto(first) from None
        if packets:
            break
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


def _not_mtproto(first: bytes) -> DialError:
    if first.startswith(b"HTTP/"):
        return _failed(Failure.UNKNOWN, "an HTTP answer instead of MTProto's (a block page?)")
    return _failed(Failure.UNKNOWN, "the answer is not MTProto's resPQ")
