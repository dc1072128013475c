"""The multiplexed tunnel's frames (mux.py), inside the inner TLS: the codec, sans-IO and
bounded (fuzzed in tests/fuzz).

    | type (1) | stream id (4) | length (4) | payload (length) |

    OPEN    client -> relay   payload: a request as in protocol.py (destination)
    REPLY   relay -> client   payload: a reply as in protocol.py (success or the failure)
    DATA    both ways         payload: the stream's bytes, within the receiver's window
    FIN     both ways         the sender's direction has ended (half-close); no payload
    RESET   both ways         the stream is gone (aborted, or data came after close)
    WINDOW  both ways         payload: 4-byte increment of the sender's window
    BLOCKED both ways         the sender has data the window does not let it send (as QUIC's
                              STREAM_DATA_BLOCKED); no payload
    PING    both ways         id 0, payload: 8 opaque bytes, answered by PONG
    PONG    both ways         id 0, the PING's payload
    GOAWAY  relay -> client   id 0: open no new streams here (the relay is stopping)

A header is checked before its payload arrives: an unknown type, an id where none belongs
(or none where one does) or a length its type cannot have is a ProtocolError at once, never
waited on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..wire import NeedMore, ProtocolError

__all__ = [
    "BLOCKED",
    "DATA",
    "FIN",
    "GOAWAY",
    "HEADER",
    "MAX_CONTROL",
    "MAX_DATA",
    "NAMES",
    "OPEN",
    "PING",
    "PONG",
    "REPLY",
    "RESET",
    "WINDOW",
    "Frame",
    "encode_frame",
    "encode_frame_into",
    "parse_frame",
]

OPEN, REPLY, DATA, FIN, RESET, WINDOW, PING, PONG, GOAWAY, BLOCKED = range(1, 11)
NAMES = {
    OPEN: "OPEN", REPLY: "REPLY", DATA: "DATA", FIN: "FIN", RESET: "RESET",
    WINDOW: "WINDOW", PING: "PING", PONG: "PONG", GOAWAY: "GOAWAY", BLOCKED: "BLOCKED",
}  # fmt: skip
HEADER = struct.Struct("!BII")
MAX_DATA = 256 * 1024  # the largest DATA frame (one TLS write: a WebSocket message)
MAX_CONTROL = 1024  # the largest payload of any other frame


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    stream: int
    payload: bytes


def encode_frame(kind: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    """One frame, header and payload in one buffer (one TLS write), the payload copied once."""
    return HEADER.pack(kind, stream, len(payload)) + payload


def encode_frame_into(
    buf: bytearray, kind: int, stream: int, payload: bytes | memoryview
) -> memoryview:
    """encode_frame written at the start of `buf` (grown when too small): a view of the
    frame there. For a writer whose stream copies each write before it returns (TLS
    encrypts it): one buffer reused for every large frame instead of a new one each time,
    whose fresh pages (a 256 KiB frame is 64 of them) cost more than the copy itself.
    BufferError when `buf` must grow while a view of it is still held."""
    size = HEADER.size + len(payload)
    if len(buf) < size:
        buf.extend(bytes(size - len(buf)))
    view = memoryview(buf)[:size]
    HEADER.pack_into(view, 0, kind, stream, len(payload))
    view[HEADER.size :] = payload
    return view


def parse_frame(buf: bytes | bytearray, start: int = 0) -> tuple[int, Frame]:
    """(bytes used, the frame) from buf[start:]; NeedMore, or ProtocolError for bytes that are
    no frame (unknown type, an id where none belongs, a payload too large for its type)."""
    if len(buf) - start < HEADER.size:
        raise NeedMore
    kind, stream, length = HEADER.unpack_from(buf, start)
    if kind not in NAMES:
        raise ProtocolError(f"unknown frame type {kind}")
    limit = MAX_DATA if kind == DATA else MAX_CONTROL
    if length > limit:
        raise ProtocolError(f"a {NAMES[kind]} frame of {length} bytes (at most {limit})")
    if (stream == 0) != (kind in (PING, PONG, GOAWAY)):
        raise ProtocolError(f"a {NAMES[kind]} frame for stream {stream}")
    if (kind == WINDOW and length != 4) or (kind in (PING, PONG) and length != 8):
        raise ProtocolError(f"a {NAMES[kind]} frame of {length} bytes")
    if kind in (FIN, GOAWAY, BLOCKED) and length:
        raise ProtocolError(f"a {NAMES[kind]} frame with a payload")
    end = start + HEADER.size + length
    if len(buf) < end:
        raise NeedMore
    with memoryview(buf) as view:  # one copy of the payload, and no view left behind
        payload = bytes(view[start + HEADER.size : end])
    return end - start, Frame(kind, stream, payload)
