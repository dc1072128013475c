r"""The client side of an MTProto proxy (a server someone was handed as `tg://proxy?...`),
sans-IO: the fake-TLS ClientHello an `ee` secret calls for, the check of the proxy's first
flight, and the re-framing between a client's transport and the padded intermediate one a
`dd` or `ee` secret requires (transports/mtproxy.py does the I/O).

The ClientHello is the one Telegram's apps send to fake-TLS proxies (tdlib's TlsInit): one
handshake record of exactly 517 bytes -- `16 03 01 02 00 01 00 01 fc 03 03`, which proxies
such as mtprotoproxy require byte for byte -- with a fresh session id, GREASE values, a
browser's cipher suites and extensions, the secret's domain as SNI, an X25519 key share and
a padding extension filling the rest. Its random is the HMAC faketls.py checks:

    digest = HMAC-SHA256(key, record with the random zeroed)
    random = digest[0:28] || digest[28:32] XOR little-endian uint32(unix time)

The proxy answers with a ServerHello, a ChangeCipherSpec and an application-data record; its
random is HMAC-SHA256(key, client random || the answer with its random zeroed). A server
whose answer has no such proof is not the proxy the secret belongs to: a web site (fake-TLS
proxies send a client they do not recognise to the site they imitate), or the wrong secret.

Framing. Telegram's apps speak padded intermediate (0xdddddddd) to `dd` and `ee` proxies;
MTProxy and mtprotoproxy with such secrets (their "secure only" modes) refuse an init with any
other tag, and detour's own endpoint does too (proxy.py). A client of detour may speak
abridged or intermediate (Telethon, or detour's own probe): `Reframer` then re-frames each
packet toward the proxy as padded intermediate (0-15 random bytes after it) and each answer
back into the client's framing, without the padding (`unpad`). With a plain secret the
client's own framing is kept and packets pass through as they are.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from .faketls import HEADER_LEN, RANDOM_AT, RANDOM_LEN, HelloError, _x25519_public_key
from .framing import MAX_PACKET, PacketReader, encode_packet
from .obfuscated2 import Tag

__all__ = [
    "HELLO_LEN",
    "Reframer",
    "client_hello",
    "server_flight",
    "unpad",
]

HELLO_LEN = 517  # the whole record, as Telegram's apps send it
_CIPHERS = bytes.fromhex("130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035")
_SIGNATURES = bytes.fromhex("040308040401050308050501080606010201")
_GREASE = tuple(bytes([0x0A + 0x10 * i]) * 2 for i in range(16))


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def _vector(body: bytes, size: int = 2) -> bytes:
    return len(body).to_bytes(size, "big") + body


def client_hello(
    key: bytes,
    domain: str,
    *,
    now: float,
    urandom: Callable[[int], bytes] = os.urandom,
    key_share: bytes | None = None,
) -> bytes:
    """The signed ClientHello record for a fake-TLS proxy with `key`, imitating `domain`
    (see the module's docstring). `now`: the unix time the random carries."""
    picks = urandom(4)
    grease = [_GREASE[b % 16] for b in picks]
    if grease[1] == grease[0]:
        grease[1] = _GREASE[(picks[1] + 1) % 16]
    name = domain.encode("ascii")
    share = key_share if key_share is not None else _x25519_public_key()
    extensions = b"".join(
        (
            _ext(int.from_bytes(grease[0], "big"), b""),
            _ext(0x0000, _vector(b"\x00" + _vector(name))),  # server_name
            _ext(0x0017, b""),  # extended_master_secret
            _ext(0xFF01, b"\x00"),  # renegotiation_info
            _ext(0x000A, _vector(grease[2] + bytes.fromhex("001d00170018"))),  # groups
            _ext(0x000B, b"\x01\x00"),  # ec_point_formats: uncompressed
            _ext(0x0023, b""),  # session_ticket
            _ext(0x0010, _vector(b"\x02h2\x08http/1.1")),  # ALPN
            _ext(0x0005, b"\x01\x00\x00\x00\x00"),  # status_request
            _ext(0x000D, _vector(_SIGNATURES)),  # signature_algorithms
            _ext(0x0012, b""),  # signed_certificate_timestamp
            _ext(0x0033, _vector(grease[2] + b"\x00\x01\x00" + b"\x00\x1d" + _vector(share))),
            _ext(0x002D, b"\x01\x01"),  # psk_key_exchange_modes: psk_dhe_ke
            _ext(0x002B, _vector(grease[3] + b"\x03\x04\x03\x03", 1)),  # supported_versions
            _ext(0x001B, b"\x02\x00\x02"),  # compress_certificate: brotli
            _ext(int.from_bytes(grease[1], "big"), b"\x00"),
        )
    )
    head = (
        b"\x03\x03"
        + bytes(RANDOM_LEN)
        + _vector(urandom(32), 1)  # session id
        + _vector(grease[0] + _CIPHERS)
        + b"\x01\x00"  # compression: none
    )
    # Handshake header (4) + head + extensions' length (2) + extensions + padding.
    used = HEADER_LEN + 4 + len(head) + 2 + len(extensions)
    if used + 4 <= HELLO_LEN:
        extensions += _ext(0x0015, bytes(HELLO_LEN - used - 4))
    body = head + _vector(extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + _vector(handshake)
    digest = hmac.digest(key, record, "sha256")
    stamp = struct.pack("<I", int(now) & 0xFFFFFFFF)
    random = digest[:28] + bytes(a ^ b for a, b in zip(digest[28:], stamp, strict=True))
    return record[:RANDOM_AT] + random + record[RANDOM_AT + RANDOM_LEN :]


def server_flight(key: bytes, hello: bytes, data: bytes | bytearray) -> int | None:
    """How many of `data`'s first bytes are the proxy's first flight (ServerHello record,
    ChangeCipherSpec records, one application-data record), checked against the key; None
    until it has all arrived. Raises HelloError when the bytes are not that flight or lack
    the proof (see the module's docstring)."""
    view = bytes(data[: HEADER_LEN + (1 << 16) * 3])
    if view[:1] not in (b"", b"\x16") or view[1:3] not in (b"", b"\x03", b"\x03\x03"):
        raise HelloError("the server's first bytes are no TLS ServerHello record")
    pos, seen_data = 0, False
    while not seen_data:
        if len(view) - pos < HEADER_LEN:
            return None
        kind, length = view[pos], int.from_bytes(view[pos + 3 : pos + 5], "big")
        short = length < RANDOM_AT + RANDOM_LEN - HEADER_LEN
        if pos == 0 and (short or view[5:6] not in (b"", b"\x02")):
            raise HelloError("the server's first record is no ServerHello")
        if pos > 0 and kind not in (0x14, 0x17):
            raise HelloError(f"a record of type {kind} in the server's first flight")
        if len(view) - pos < HEADER_LEN + length:
            return None
        pos += HEADER_LEN + length
        seen_data = kind == 0x17
    flight = view[:pos]
    zeroed = flight[:RANDOM_AT] + bytes(RANDOM_LEN) + flight[RANDOM_AT + RANDOM_LEN :]
    proof = hmac.digest(key, hello[RANDOM_AT : RANDOM_AT + RANDOM_LEN] + zeroed, "sha256")
    if not hmac.compare_digest(proof, flight[RANDOM_AT : RANDOM_AT + RANDOM_LEN]):
        raise HelloError("the server's answer is not signed with the secret")
    return pos


def unpad(payload: bytes) -> bytes:
    """An MTProto packet's payload without the 0-15 padding bytes the padded intermediate
    transport adds: an unencrypted message says its own length (auth_key_id 0, msg_id, a
    length, the data), an encrypted one is auth_key_id (8), msg_key (16) and whole 16-byte
    blocks, and a transport error is one int32."""
    size = len(payload)
    if size < 24:
        return payload[:4] if size < 20 else payload[: size - size % 4]
    if payload[:8] == bytes(8):
        (length,) = struct.unpack_from("<I", payload, 16)
        return payload[: min(size, 20 + length)]
    return payload[: size - (size - 24) % 16]


class Reframer:
    """One direction's packets, from `source` framing to `target` framing: feed plaintext
    bytes, get plaintext bytes. Toward padded intermediate each packet gets random padding;
    out of it, the padding is removed. Raises FramingError as PacketReader does."""

    def __init__(
        self,
        source: Tag,
        target: Tag,
        *,
        limit: int = MAX_PACKET,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.source, self.target = source, target
        self._reader = PacketReader(source, limit=limit)
        self._urandom = urandom

    @property
    def pending(self) -> int:
        return self._reader.pending

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        out = []
        strip = self.source is Tag.PADDED and self.target is not Tag.PADDED
        for payload in self._reader.feed(data):
            if strip:
                payload = unpad(payload)
            if self.target is Tag.ABRIDGED and len(payload) % 4:
                payload = payload[: len(payload) - len(payload) % 4]
            if payload:
                out.append(encode_packet(self.target, payload, urandom=self._urandom))
        return b"".join(out)
