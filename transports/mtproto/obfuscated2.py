r"""obfuscated2: the 64-byte init that starts an obfuscated MTProto connection, and the
AES-256-CTR ciphers it sets up for both directions. Sans-IO: bytes in, bytes out.

Telegram's apps, its web clients (over WebSocket) and MTProto proxies all begin this way
(core.telegram.org/mtproto/mtproto-transports#transport-obfuscation). The initiator sends 64
random bytes, of which the last eight are encrypted:

    offset  0         8                          40              56        60    62   64
            +---------+--------------------------+---------------+---------+-----+----+
            | random  | key, initiator -> peer   | IV, init. ->  | protocol| DC  | ra-|
            | (8)     | (32)                     | peer (16)     | tag (4) | (2) | nd |
            +---------+--------------------------+---------------+---------+-----+----+
                                                                  \____ encrypted ____/

- initiator -> peer: AES-256-CTR with key = init[8:40], IV = init[40:56];
- peer -> initiator: the same 48 bytes reversed: key = rev[0:32], IV = rev[32:48] where
  rev = init[8:56] backwards;
- through an MTProto proxy with a secret, each key is sha256(key + secret) instead;
- the initiator's cipher starts at the init itself: bytes 56..64 on the wire are the
  plaintext tag and DC field encrypted at stream offset 56 (the whole init is run through
  the cipher and only its last 8 bytes are kept), so the initiator's packets begin at
  offset 64; the other direction's cipher starts at 0 with the peer's first byte.

The protocol tag says how packets are framed inside (framing.py): abridged 0xefefefef,
intermediate 0xeeeeeeee, padded intermediate 0xdddddddd. The DC field is a little-endian
int16: the DC's number, negative for a media connection, plus 10000 for a test DC
(Telegram Desktop's convention; MTProto proxies read it, a DC and the web endpoints ignore it).

An init must not look like another transport a server accepts on the same port, so its
first byte is not 0xef (abridged), its first four bytes are none of "HEAD", "POST", "GET ",
"OPTI" (HTTP), 0xeeeeeeee, 0xdddddddd (intermediate, padded), 0x16030102 (a TLS record:
fake-TLS proxies) or "PVrG" (avoided by Telethon), and its second four bytes are not zero
(the full transport starts with a length and a zero sequence number). `classify` tells
these apart on the receiving side.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "INIT_LEN",
    "Header",
    "InitError",
    "Keystream",
    "Obfuscation",
    "Tag",
    "TransportKind",
    "accept",
    "classify",
    "dc_field",
    "initiate",
    "initiate_relayed",
]

INIT_LEN = 64
_TAG_AT, _DC_AT = 56, 60
_MAX_DC_FIELD = 1 << 15  # an int16


class Tag(enum.Enum):
    """How the packets inside are framed (the protocol tag at offset 56)."""

    ABRIDGED = b"\xef\xef\xef\xef"
    INTERMEDIATE = b"\xee\xee\xee\xee"
    PADDED = b"\xdd\xdd\xdd\xdd"


class TransportKind(enum.Enum):
    """What a client's first bytes say it speaks (`classify`)."""

    OBFUSCATED2 = "obfuscated2"  # if its 64-byte init decrypts to a valid tag (accept())
    ABRIDGED = "abridged"  # 0xef, then abridged packets in the clear
    INTERMEDIATE = "intermediate"  # 0xeeeeeeee, then intermediate packets in the clear
    PADDED = "padded intermediate"  # 0xdddddddd, the same with random padding
    FULL = "full"  # a length and a zero sequence number: MTProto's "full" transport
    HTTP = "HTTP"  # MTProto over HTTP (POST /api), or any HTTP
    TLS = "TLS"  # a TLS record (a fake-TLS MTProto proxy client, or a browser)


_FORBIDDEN_STARTS = {
    b"HEAD",
    b"POST",
    b"GET ",
    b"OPTI",
    Tag.INTERMEDIATE.value,
    Tag.PADDED.value,
    b"\x16\x03\x01\x02",
    b"PVrG",
}
_HTTP_STARTS = (b"HEAD", b"POST", b"GET ", b"OPTI", b"PUT ", b"DELE", b"PATC", b"CONN", b"TRAC")


class InitError(ValueError):
    """The bytes are not an obfuscated2 init (junk, another transport, a wrong secret)."""


def classify(first: bytes) -> TransportKind | None:
    """What a client speaks, from its first bytes; None until enough have arrived (at most
    8). OBFUSCATED2 means only "not one of the others": accept() decides."""
    if not first:
        return None
    if first[0] == 0xEF:
        return TransportKind.ABRIDGED
    if first[0] == 0x16 and len(first) >= 2 and first[1] == 0x03:
        return TransportKind.TLS
    if len(first) < 4:
        return None
    start = bytes(first[:4])
    if start == Tag.INTERMEDIATE.value:
        return TransportKind.INTERMEDIATE
    if start == Tag.PADDED.value:
        return TransportKind.PADDED
    if start in _HTTP_STARTS:
        return TransportKind.HTTP
    if len(first) < 8:
        return None
    if first[4:8] == b"\0\0\0\0":
        return TransportKind.FULL
    return TransportKind.OBFUSCATED2


def dc_field(dc: int, *, media: bool = False, test: bool = False) -> int:
    """The init's DC field for DC `dc` (Telegram Desktop's convention)."""
    value = dc + (10000 if test else 0)
    value = -value if media else value
    if not -_MAX_DC_FIELD <= value < _MAX_DC_FIELD:
        raise ValueError(f"DC {dc} does not fit the init's DC field")
    return value


@dataclass(frozen=True)
class Header:
    """What the init says, once decrypted."""

    tag: Tag
    dc_field: int  # as sent: signed, negative for media, +10000 for a test DC

    @property
    def dc(self) -> int:
        """The DC's number (1-5 for Telegram's production DCs; 0: the client did not say)."""
        value = abs(self.dc_field)
        return value - 10000 if value > 10000 else value

    @property
    def media(self) -> bool:
        return self.dc_field < 0

    @property
    def test(self) -> bool:
        return abs(self.dc_field) > 10000


class Keystream:
    """AES-256-CTR as MTProto uses it (the whole 16-byte IV is the big-endian counter),
    streaming both ways, plus `peek`: the keystream at any later offset, one block at a time,
    so a reader of a stream it does not decrypt can still find its packets' length fields."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != 32 or len(iv) != 16:
            raise ValueError("AES-256-CTR needs a 32-byte key and a 16-byte IV")
        # Imported here, not with the module: it costs a process about 6 MB, which a router
        # whose config merely names a tgws route should not pay before its first use.
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._ctr = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        self._key = key
        self._iv_bytes = bytes(iv)
        self._iv = int.from_bytes(iv, "big")
        self._ecb: Callable[[bytes], bytes] | None = None
        self.offset = 0  # bytes processed by apply() so far

    def apply(self, data: bytes | bytearray | memoryview) -> bytes:
        """XOR `data` with the next keystream bytes (encrypting and decrypting alike)."""
        self.offset += len(data)
        return self._ctr.update(data)

    def apply_into(self, data: bytes | bytearray | memoryview, out: bytearray) -> memoryview:
        """`apply`, into `out` (at least len(data) + 15 bytes, not overlapping `data`): no
        new buffer per call. Returns the view of `out` that holds the result."""
        self.offset += len(data)
        return memoryview(out)[: self._ctr.update_into(data, out)]

    @property
    def key_and_iv(self) -> bytes:
        """The 48 bytes this keystream was made from (key, then IV)."""
        return self._key + self._iv_bytes

    def skip(self, n: int) -> None:
        """Advance without producing output (bytes another party encrypted)."""
        self.apply(bytes(n))

    def peek(self, offset: int, n: int) -> bytes:
        """The n keystream bytes at stream offset `offset`, without moving the stream."""
        if self._ecb is None:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            # ECB of the counter blocks is CTR's keystream; used a few bytes per packet.
            self._ecb = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor().update
        first, last = offset // 16, (offset + n - 1) // 16
        counters = ((self._iv + block) % (1 << 128) for block in range(first, last + 1))
        blocks = b"".join(counter.to_bytes(16, "big") for counter in counters)
        stream = self._ecb(blocks)
        start = offset - first * 16
        return stream[start : start + n]


class Obfuscation:
    """Both directions of one obfuscated2 connection, from one side's point of view."""

    def __init__(self, send: Keystream, receive: Keystream) -> None:
        self.send = send  # what this side writes
        self.receive = receive  # what this side reads

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return self.send.apply(data)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        return self.receive.apply(data)


def _keys(init: bytes, secret: bytes | None) -> tuple[Keystream, Keystream]:
    """(initiator -> peer, peer -> initiator) keystreams for `init`, both at offset 0."""
    forward = init[8:56]
    backward = forward[::-1]
    up_key, down_key = forward[:32], backward[:32]
    if secret is not None:
        up_key = hashlib.sha256(up_key + secret).digest()
        down_key = hashlib.sha256(down_key + secret).digest()
    return Keystream(up_key, forward[32:48]), Keystream(down_key, backward[32:48])


def _acceptable_start(init: bytes) -> bool:
    return init[0] != 0xEF and bytes(init[:4]) not in _FORBIDDEN_STARTS and init[4:8] != b"\0\0\0\0"


def initiate(
    tag: Tag,
    dc: int = 0,
    *,
    secret: bytes | None = None,
    urandom: Callable[[int], bytes] = os.urandom,
) -> tuple[bytes, Obfuscation]:
    """A new init (as it goes on the wire) and the initiator's ciphers (sending at offset
    64, after the init; receiving at 0).

    `dc` is the init's DC field (see dc_field()); `secret` the MTProto proxy's 16-byte
    secret when talking to one."""
    init = _random_init(urandom)
    return _finish(init, tag, dc, secret)


def initiate_relayed(
    tag: Tag,
    dc: int,
    answers: Keystream,
    *,
    urandom: Callable[[int], bytes] = os.urandom,
) -> tuple[bytes, Obfuscation]:
    """An init toward a DC made so that the DC encrypts its answers with `answers`' key and
    IV: the keystream a proxy's client decrypts with (`answers` is the proxy's sending
    cipher toward its client, at offset 0). The proxy then passes what the DC sends on
    unchanged, and re-encrypts only what the client sends (the "fast mode" of MTProto
    proxies). The init's key material is fixed by `answers`: only bytes 0-8 and 62-64 are
    random, and the initiator's sending cipher is the same for every init made from it."""
    if answers.offset:
        raise ValueError("the answers' keystream has been used already")
    init = _random_init(urandom)
    init[8:56] = answers.key_and_iv[::-1]  # the peer's key and IV are these 48 bytes reversed
    return _finish(init, tag, dc, None)


def _random_init(urandom: Callable[[int], bytes]) -> bytearray:
    # Stricter than accept(): a new init never starts like anything classify() names,
    # TLS's 16 03 and every HTTP verb included, so no peer can take it for another transport.
    while True:
        init = bytearray(urandom(INIT_LEN))
        if classify(bytes(init[:8])) is TransportKind.OBFUSCATED2:
            return init


def _finish(init: bytearray, tag: Tag, dc: int, secret: bytes | None) -> tuple[bytes, Obfuscation]:
    if not -_MAX_DC_FIELD <= dc < _MAX_DC_FIELD:
        raise ValueError(f"DC field {dc} does not fit an int16")
    init[_TAG_AT:_DC_AT] = tag.value
    init[_DC_AT : _DC_AT + 2] = struct.pack("<h", dc)
    send, receive = _keys(bytes(init), secret)
    encrypted = send.apply(bytes(init))
    init[_TAG_AT:INIT_LEN] = encrypted[_TAG_AT:INIT_LEN]
    return bytes(init), Obfuscation(send, receive)


def accept(
    init: bytes | bytearray | memoryview, *, secret: bytes | None = None
) -> tuple[Header, Obfuscation]:
    """Read an initiator's 64-byte init: what it says, and the receiving side's ciphers
    (`send` toward the initiator, at offset 0; `receive` from it, at 64, after the init).

    Raises InitError when the bytes are no init (junk, another transport, or an init made
    with another secret: the tag then decrypts to noise)."""
    init = bytes(init)
    if len(init) != INIT_LEN:
        raise InitError(f"an init is {INIT_LEN} bytes, not {len(init)}")
    if not _acceptable_start(init):
        raise InitError("these bytes start another transport, not an obfuscated2 init")
    up, down = _keys(init, secret)
    plain = up.apply(init)
    try:
        tag = Tag(plain[_TAG_AT:_DC_AT])
    except ValueError:
        raise InitError("the init's protocol tag is not abridged, intermediate or padded") from None
    (dc,) = struct.unpack_from("<h", plain, _DC_AT)
    return Header(tag, dc), Obfuscation(send=down, receive=up)
