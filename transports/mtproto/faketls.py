r"""Fake TLS: how a client with an `ee` proxy secret (secret.py) hides MTProto in what looks
like a TLS 1.3 session to a real web site, and how the proxy recognises it. Sans-IO.

The client (Telegram's apps, following Telegram's MTProxy) sends a TLS ClientHello for the
secret's domain whose 32-byte random is not random: it is an HMAC of the hello, keyed with
the secret, with the time folded in.

    ClientHello record  16 03 01 LEN | 01 LEN3 | 03 03 | random (32) | sid len | session id...
                        0            5           9       11            43        44
    digest    = HMAC-SHA256(key, the whole record with the random's 32 bytes zeroed)
    random    = digest[0:28] || digest[28:32] XOR little-endian uint32(unix time)

Only a holder of the key can make one; the time (checked within a window, `skew`) and a cache
of the randoms already seen (`ReplayCache`) keep a recorded hello from being replayed later.

The proxy answers with what a TLS 1.3 server's first flight looks like, all in the clear as
TLS 1.3 sends it: a ServerHello (the client's session id echoed, TLS_AES_128_GCM_SHA256, an
X25519 key share, supported_versions 1.3), a ChangeCipherSpec record and one application-data
record of random bytes (where a real server's encrypted certificate would be). Its random
proves the proxy holds the key too:

    server random = HMAC-SHA256(key, client random || the whole answer with its random zeroed)

Then both sides carry the obfuscated2 stream (obfuscated2.py: the client's 64-byte init
first, its ciphers keyed with the secret) in application-data records, `17 03 03 LEN payload`;
the client sends one ChangeCipherSpec record before its first, as TLS 1.3 clients do.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_RECORD",
    "ClientHello",
    "HelloError",
    "RecordError",
    "RecordReader",
    "RecordSplitter",
    "ReplayCache",
    "check_client_hello",
    "hello_length",
    "record_pieces",
    "server_hello",
    "wrap_records",
]

RANDOM_AT, RANDOM_LEN = 11, 32
_SESSION_ID_AT = RANDOM_AT + RANDOM_LEN
HEADER_LEN = 5
# A TLS record's payload: 2^14 bytes of plaintext (what this side writes), 2^14 + 256 of
# TLS 1.3 ciphertext (the most a client that looks like TLS can send).
MAX_PLAINTEXT = 1 << 14
MAX_RECORD = MAX_PLAINTEXT + 256
_HANDSHAKE, _CCS, _APPLICATION_DATA = 0x16, 0x14, 0x17
_TLS12 = b"\x03\x03"
_CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
_AES_128_GCM_SHA256 = b"\x13\x01"
# The application-data record that stands for the server's certificate: as long as one.
_FAKE_CERTIFICATE = (1024, 4096)


class HelloError(ValueError):
    """Not a ClientHello from a holder of the secret (junk, a browser, a prober, a replay,
    a clock outside the window)."""


class RecordError(ValueError):
    """A record a fake-TLS client does not send (another type, a length beyond the limit)."""


def hello_length(first: bytes | bytearray | memoryview) -> int | None:
    """The whole ClientHello record's size from its first bytes; None until 5 have arrived.
    Raises HelloError for anything that is no TLS handshake record."""
    if len(first) < HEADER_LEN:
        if first[:1] not in (b"", b"\x16") or first[1:2] not in (b"", b"\x03"):
            raise HelloError("not a TLS handshake record")
        return None
    kind, major, _minor, length = struct.unpack_from(">BBBH", first)
    if kind != _HANDSHAKE or major != 3:
        raise HelloError("not a TLS handshake record")
    if not _SESSION_ID_AT + 1 - HEADER_LEN <= length <= MAX_PLAINTEXT:
        raise HelloError(f"a handshake record of {length} bytes")
    return HEADER_LEN + length


@dataclass(frozen=True)
class ClientHello:
    random: bytes  # as sent (the server's HMAC covers it)
    session_id: bytes
    timestamp: int  # the client's unix time

    @property
    def proof(self) -> bytes:
        """The HMAC part of the random: what a replay cache keys on. The last four bytes
        carry the time in the clear (XORed), so a replay with them changed is the same
        hello."""
        return self.random[:28]


def check_client_hello(
    record: bytes, key: bytes, *, now: float, skew: float, replays: ReplayCache | None = None
) -> ClientHello:
    """The hello's random checked against `key`, its time against `now` +- `skew` seconds,
    and (if `replays` is given) against the randoms already seen, which this one joins.
    Raises HelloError saying which check failed."""
    if len(record) < _SESSION_ID_AT + 1 or hello_length(record) != len(record):
        raise HelloError("a truncated ClientHello")
    if record[HEADER_LEN] != 0x01:
        raise HelloError("a handshake record that is no ClientHello")
    random = bytes(record[RANDOM_AT : RANDOM_AT + RANDOM_LEN])
    session_len = record[_SESSION_ID_AT]
    session_id = bytes(record[_SESSION_ID_AT + 1 : _SESSION_ID_AT + 1 + session_len])
    if session_len > 32 or len(session_id) != session_len:
        raise HelloError("a ClientHello's session id runs past its end")
    zeroed = record[:RANDOM_AT] + bytes(RANDOM_LEN) + record[RANDOM_AT + RANDOM_LEN :]
    digest = hmac.digest(key, zeroed, "sha256")
    if not hmac.compare_digest(digest[:28], random[:28]):
        raise HelloError("the ClientHello is not signed with this secret")
    (timestamp,) = struct.unpack(
        "<I", bytes(a ^ b for a, b in zip(digest[28:], random[28:], strict=True))
    )
    if abs(now - timestamp) > skew:
        raise HelloError(f"the client's clock is {now - timestamp:+.0f}s off (at most {skew:g}s)")
    hello = ClientHello(random, session_id, timestamp)
    if replays is not None and not replays.add(hello.proof, now):
        raise HelloError("a replayed ClientHello")
    return hello


def server_hello(
    key: bytes,
    hello: ClientHello,
    *,
    urandom: Callable[[int], bytes] = os.urandom,
    key_share: bytes | None = None,
) -> bytes:
    """The proxy's first flight in answer to a checked `hello` (see the module's docstring).
    `key_share`: the X25519 public key to show (a fresh one by default)."""
    if key_share is None:
        key_share = _x25519_public_key()
    extensions = (
        b"\x00\x33\x00\x24\x00\x1d\x00\x20" + key_share  # key_share: x25519, 32 bytes
        + b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: TLS 1.3
    )  # fmt: skip
    body = (
        _TLS12
        + bytes(RANDOM_LEN)
        + bytes([len(hello.session_id)])
        + hello.session_id
        + _AES_128_GCM_SHA256
        + b"\x00"  # no compression
        + struct.pack(">H", len(extensions))
        + extensions
    )
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    low, high = _FAKE_CERTIFICATE
    size = low + int.from_bytes(urandom(2), "big") % (high - low)
    answer = (
        bytes([_HANDSHAKE]) + _TLS12 + struct.pack(">H", len(handshake)) + handshake
        + _CCS_RECORD
        + bytes([_APPLICATION_DATA]) + _TLS12 + struct.pack(">H", size) + urandom(size)
    )  # fmt: skip
    digest = hmac.digest(key, hello.random + answer, "sha256")
    return answer[:RANDOM_AT] + digest + answer[RANDOM_AT + RANDOM_LEN :]


def _x25519_public_key() -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = X25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def record_pieces(data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """`data` as application-data records of at most 2^14 bytes each, in pieces: each
    record's header, then its payload as a view of `data` (for a vectored write)."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, len(view), MAX_PLAINTEXT):
        chunk = view[start : start + MAX_PLAINTEXT]
        parts.append(b"\x17\x03\x03" + struct.pack(">H", len(chunk)))
        parts.append(chunk)
    return parts


def wrap_records(data: bytes | bytearray | memoryview) -> bytes:
    """`data` as application-data records of at most 2^14 bytes each."""
    view = memoryview(data)
    if len(view) <= MAX_PLAINTEXT:
        return b"\x17\x03\x03" + struct.pack(">H", len(view)) + view
    return b"".join(record_pieces(view))


class RecordSplitter:
    """A fake-TLS client's application data, from its records as they arrive: each feed
    returns the payload bytes it holds as views of what was fed (valid until that buffer
    changes: no copy), a record's payload as soon as it arrives, even before the record is
    complete. ChangeCipherSpec records (`14 03 03 00 01 01`) are skipped. Raises RecordError
    on any other record; after that the splitter is not to be fed again."""

    def __init__(self, limit: int = MAX_RECORD) -> None:
        self.limit = limit
        self._head = bytearray()  # a record header that is still incomplete
        self._left = 0  # the current record's payload bytes still to come
        self._skip = False  # the current record's payload is dropped (ChangeCipherSpec)

    @property
    def pending(self) -> int:
        """Bytes still due of a record begun (its header's rest, its payload's)."""
        return (HEADER_LEN - len(self._head) if self._head else 0) + self._left

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        view = memoryview(data)
        pieces = []
        pos, end = 0, len(view)
        head = self._head
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                if not self._skip:
                    pieces.append(view[pos : pos + take])
                self._left -= take
                pos += take
                continue
            take = min(HEADER_LEN - len(head), end - pos)
            head += view[pos : pos + take]
            pos += take
            if len(head) < HEADER_LEN:
                break
            kind, version, length = struct.unpack(">B2sH", head)
            head.clear()
            if version != _TLS12:
                raise RecordError(f"a record of version {version.hex()}")
            if kind == _APPLICATION_DATA:
                if length > self.limit:
                    raise RecordError(f"a record of {length} bytes (at most {self.limit})")
            elif kind == _CCS:
                if length != 1:
                    raise RecordError("a ChangeCipherSpec record of another length")
            else:
                raise RecordError(f"a record of type {kind} inside the session")
            self._left, self._skip = length, kind == _CCS
        return pieces


class RecordReader:
    """RecordSplitter's payloads joined into bytes, one feed at a time."""

    def __init__(self, limit: int = MAX_RECORD) -> None:
        self.splitter = RecordSplitter(limit)

    @property
    def pending(self) -> int:
        return self.splitter.pending

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        return b"".join(self.splitter.feed(data))


class ReplayCache:
    """Keys seen within `window` seconds, at most `capacity` of them (the oldest go first).
    `add` says whether a key is new."""

    def __init__(self, capacity: int = 65536, window: float | None = None) -> None:
        self.capacity = capacity
        self.window = window
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: bytes, now: float) -> bool:
        seen = self._seen
        if self.window is not None:
            while seen and next(iter(seen.values())) < now - self.window:
                seen.popitem(last=False)
        if key in seen:
            return False
        seen[key] = now
        while len(seen) > self.capacity:
            seen.popitem(last=False)
        return True
