"""What a DPI box sees at the start of a flow: the TLS server name or the HTTP Host, as far
as its reassembly reaches. Pure functions over bytes; the censor feeds them what it read.

Reassembly depth (../reference: older boxes look at the first packet only, some parse only
the first TLS record, newer ones reassemble the whole ClientHello):

    first-segment  the first read of the flow only, and only the first TLS record in it
    first-record   TCP reassembled until the first TLS record is complete; only that record
    full           TCP and TLS reassembled until the whole ClientHello (or HTTP head) is in

A server name split across TLS records (tlsfrag) is invisible to the first two; a name split
across TCP segments (split) is invisible to the first. In the lab, "segment" means "what one
read returned": a client must pause between its segments for the censor to see them apart.

This parser is the lab's own, deliberately separate from detour's ClientHello handling in
transports/, so the two do not share a mistake.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = ["Depth", "Seen", "inspect", "server_name"]

MAX_INSPECT = 16 * 1024 + 5 * 4  # a ClientHello fits in one maximum-size record, plus headers
_HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                 b"CONNECT ", b"TRACE ")  # fmt: skip


class Depth(enum.StrEnum):
    FIRST_SEGMENT = "first-segment"
    FIRST_RECORD = "first-record"
    FULL = "full"


@dataclass(frozen=True)
class Seen:
    protocol: str  # "tls", "http" or "other"
    sni: str | None = None
    host: str | None = None


def _records(data: bytes) -> tuple[list[bytes], bool]:
    """Payloads of the complete TLS handshake records at the start of `data`, and whether
    something other than a handshake record follows them (no more handshake will come)."""
    payloads: list[bytes] = []
    pos = 0
    while pos + 5 <= len(data):
        if data[pos] != 0x16:
            return payloads, True
        (length,) = struct.unpack_from("!H", data, pos + 3)
        if pos + 5 + length > len(data):
            break
        payloads.append(data[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return payloads, False


def server_name(handshake: bytes) -> str | None:
    """The server name in a (possibly truncated) ClientHello handshake message, if its
    server_name extension is complete in the bytes given."""
    if len(handshake) < 4 or handshake[0] != 0x01:
        return None
    pos = 4 + 2 + 32  # handshake header, client_version, random
    try:
        pos += 1 + handshake[pos]  # session_id
        (n,) = struct.unpack_from("!H", handshake, pos)
        pos += 2 + n  # cipher_suites
        pos += 1 + handshake[pos]  # compression_methods
        (ext_total,) = struct.unpack_from("!H", handshake, pos)
        pos += 2
        end = min(len(handshake), pos + ext_total)
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", handshake, pos)
            pos += 4
            if pos + ext_len > end:
                return None  # the extension runs past what we have
            if ext_type == 0:  # server_name
                return _first_host_name(handshake[pos : pos + ext_len])
            pos += ext_len
    except (IndexError, struct.error):
        return None
    return None


def _first_host_name(ext: bytes) -> str | None:
    if len(ext) < 2:
        return None
    (list_len,) = struct.unpack_from("!H", ext, 0)
    pos, end = 2, min(len(ext), 2 + list_len)
    while pos + 3 <= end:
        name_type, name_len = ext[pos], struct.unpack_from("!H", ext, pos + 1)[0]
        pos += 3
        if pos + name_len > end:
            return None
        if name_type == 0:
            try:
                return ext[pos : pos + name_len].decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                return None
        pos += name_len
    return None


def _http_host(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1").lower()
            if host.startswith("["):
                return host.split("]")[0] + "]"
            return host.split(":")[0].rstrip(".")
    return None


def inspect(data: bytes, depth: Depth, *, final: bool = False) -> Seen | None:
    """What a DPI box of this depth makes of the first bytes of a flow, or None when it
    would wait for more (never when `final`: then it decides on what it has)."""
    if not data:
        return Seen("other") if final else None
    if depth is Depth.FIRST_SEGMENT:
        final = True  # it never waits for a second segment
    if data[0] == 0x16:
        return _inspect_tls(data, depth, final)
    if any(data.startswith(m) for m in _HTTP_METHODS) or (
        not final and any(m.startswith(data) for m in _HTTP_METHODS)
    ):
        end = data.find(b"\r\n\r\n")
        if end < 0 and not final and len(data) < MAX_INSPECT:
            return None
        head = data if end < 0 else data[:end]
        return Seen("http", host=_http_host(head))
    return Seen("other")


def _inspect_tls(data: bytes, depth: Depth, final: bool) -> Seen | None:
    data = data[:MAX_INSPECT]
    final = final or len(data) >= MAX_INSPECT
    if depth is Depth.FIRST_SEGMENT:
        # The first record as far as this segment carries it.
        length = struct.unpack_from("!H", data, 3)[0] if len(data) >= 5 else 0
        return Seen("tls", sni=server_name(data[5 : 5 + length]))
    payloads, other_follows = _records(data)
    if depth is Depth.FIRST_RECORD:
        if payloads:
            return Seen("tls", sni=server_name(payloads[0]))
        return Seen("tls", sni=server_name(data[5:])) if final or other_follows else None
    handshake = b"".join(payloads)
    if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
        return Seen("tls", sni=server_name(handshake))
    if final or other_follows:
        return Seen("tls", sni=server_name(handshake))
    return None
