"""The few MTProto messages detour reads and writes itself: the unencrypted first exchange of
a key exchange (core.telegram.org/mtproto/auth_key), which any DC and web endpoint answers
without an account. The probes send req_pq_multi and check the resPQ; the lab's mock DC
answers it and records what a client sends next. Sans-IO.

Unencrypted message (core.telegram.org/mtproto/description#unencrypted-message)::

    +--------------------+-----------------+--------------+-------------------+
    | auth_key_id = 0 (8)| message_id (8)  | length (4)   | body (length)     |
    +--------------------+-----------------+--------------+-------------------+

    req_pq_multi#be7e8ef1 nonce:int128 = ResPQ
    resPQ#05162463 nonce:int128 server_nonce:int128 pq:string
                   server_public_key_fingerprints:Vector<long> = ResPQ
    req_DH_params#d712e4be nonce:int128 server_nonce:int128 p:string q:string
                   public_key_fingerprint:long encrypted_data:string = Server_DH_Params

Integers are little-endian. A TL string is one length byte (0-253) or 0xfe and three
length bytes, then the bytes, padded with zeros to a multiple of 4.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "REQ_DH_PARAMS",
    "REQ_PQ",
    "REQ_PQ_MULTI",
    "RES_PQ",
    "MessageError",
    "ReqDhParams",
    "ResPQ",
    "constructor",
    "message_id",
    "parse_req_dh_params",
    "parse_req_pq",
    "parse_res_pq",
    "parse_unencrypted",
    "req_pq_multi",
    "res_pq",
    "rsa_fingerprint",
    "tl_bytes",
    "transport_error",
    "unencrypted",
]

REQ_PQ = 0x60469778
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
REQ_DH_PARAMS = 0xD712E4BE
VECTOR = 0x1CB5C415
_HEAD = struct.Struct("<QqI")  # auth_key_id, message_id, length


class MessageError(ValueError):
    """Bytes that are not the message expected."""


def message_id(now: Callable[[], float] = time.time) -> int:
    """A client's message id: about the Unix time times 2^32, divisible by 4."""
    return int(now() * (1 << 32)) & ~3


def unencrypted(body: bytes, msg_id: int) -> bytes:
    return _HEAD.pack(0, msg_id, len(body)) + body


def parse_unencrypted(payload: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """(message_id, body) of an unencrypted message; padding after the body is ignored."""
    if len(payload) < _HEAD.size:
        raise MessageError(f"{len(payload)} bytes are too few for an MTProto message")
    auth_key_id, msg_id, length = _HEAD.unpack_from(payload)
    if auth_key_id != 0:
        raise MessageError("an encrypted message where an unencrypted one was expected")
    if length > len(payload) - _HEAD.size:
        raise MessageError(f"the message says {length} bytes but carries fewer")
    return msg_id, bytes(payload[_HEAD.size : _HEAD.size + length])


def constructor(body: bytes) -> int | None:
    return struct.unpack_from("<I", body)[0] if len(body) >= 4 else None


def transport_error(payload: bytes | bytearray | memoryview) -> int | None:
    """The error code when a packet is one of the transport's errors (a negative int32, as
    -404 for "no such auth key" or -429 for "too many connections"), else None."""
    if len(payload) != 4:
        return None
    (code,) = struct.unpack("<i", payload)
    return code if code < 0 else None


def tl_bytes(data: bytes) -> bytes:
    n = len(data)
    head = bytes([n]) if n < 254 else b"\xfe" + n.to_bytes(3, "little")
    raw = head + data
    return raw + b"\0" * (-len(raw) % 4)


def _read_bytes(body: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(body):
        raise MessageError("a string runs past the message's end")
    n, head = body[pos], 1
    if n == 254:
        if pos + 4 > len(body):
            raise MessageError("a string runs past the message's end")
        n, head = int.from_bytes(body[pos + 1 : pos + 4], "little"), 4
    elif n == 255:
        raise MessageError("a string with an invalid length byte")
    end = pos + head + n
    if end > len(body):
        raise MessageError("a string runs past the message's end")
    return body[pos + head : end], end + (-(head + n) % 4)


def _expect(body: bytes, wanted: int, name: str) -> None:
    if constructor(body) != wanted:
        seen = constructor(body)
        got = f"#{seen:08x}" if seen is not None else "nothing"
        raise MessageError(f"expected {name}, got {got}")


def req_pq_multi(nonce: bytes) -> bytes:
    if len(nonce) != 16:
        raise ValueError("a nonce is 16 bytes")
    return struct.pack("<I", REQ_PQ_MULTI) + nonce


def parse_req_pq(body: bytes) -> bytes:
    """The nonce of req_pq_multi (or the older req_pq)."""
    if constructor(body) not in (REQ_PQ_MULTI, REQ_PQ) or len(body) < 20:
        raise MessageError("not req_pq_multi")
    return body[4:20]


@dataclass(frozen=True)
class ResPQ:
    nonce: bytes
    server_nonce: bytes
    pq: bytes  # big-endian
    fingerprints: tuple[int, ...]  # signed 64-bit, as TL's long

    @property
    def pq_value(self) -> int:
        return int.from_bytes(self.pq, "big")


def res_pq(answer: ResPQ) -> bytes:
    return (
        struct.pack("<I", RES_PQ)
        + answer.nonce
        + answer.server_nonce
        + tl_bytes(answer.pq)
        + struct.pack("<Ii", VECTOR, len(answer.fingerprints))
        + b"".join(struct.pack("<q", f) for f in answer.fingerprints)
    )


def parse_res_pq(body: bytes) -> ResPQ:
    _expect(body, RES_PQ, "resPQ")
    if len(body) < 36:
        raise MessageError("resPQ is too short")
    nonce, server_nonce = body[4:20], body[20:36]
    pq, pos = _read_bytes(body, 36)
    if pos + 8 > len(body):
        raise MessageError("resPQ ends before its fingerprints")
    vector, count = struct.unpack_from("<Ii", body, pos)
    if vector != VECTOR or not 0 <= count <= (len(body) - pos - 8) // 8:
        raise MessageError("resPQ's fingerprints are not a vector of longs")
    fingerprints = struct.unpack_from(f"<{count}q", body, pos + 8)
    return ResPQ(nonce, server_nonce, pq, tuple(fingerprints))


@dataclass(frozen=True)
class ReqDhParams:
    nonce: bytes
    server_nonce: bytes
    p: bytes
    q: bytes
    fingerprint: int
    encrypted_data: bytes


def parse_req_dh_params(body: bytes) -> ReqDhParams:
    _expect(body, REQ_DH_PARAMS, "req_DH_params")
    if len(body) < 36:
        raise MessageError("req_DH_params is too short")
    p, pos = _read_bytes(body, 36)
    q, pos = _read_bytes(body, pos)
    if pos + 8 > len(body):
        raise MessageError("req_DH_params ends before its fingerprint")
    (fingerprint,) = struct.unpack_from("<q", body, pos)
    encrypted, _ = _read_bytes(body, pos + 8)
    return ReqDhParams(body[4:20], body[20:36], p, q, fingerprint, encrypted)


def rsa_fingerprint(n: int, e: int) -> int:
    """An RSA public key's fingerprint as MTProto computes it: the low 64 bits of
    sha1(TL string of n, TL string of e), little-endian, as a signed long."""

    def big_endian(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    digest = hashlib.sha1(tl_bytes(big_endian(n)) + tl_bytes(big_endian(e))).digest()
    return struct.unpack("<q", digest[-8:])[0]
