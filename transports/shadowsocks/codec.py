"""The Shadowsocks TCP stream formats, without sockets: bytes in, bytes out.

A connection carries two streams, each with its own random salt and session key (see
methods.py); every chunk is sealed with the stream's AEAD under a 12-byte little-endian
counter nonce that goes up by one per seal.

AEAD, 2017 (SIP004)                            2022 (SIP022)

    request:  salt | len | addr+data | ...         request:  salt | [identity headers]
    response: salt | len | data | ...                        | fixed header (11 B)
                                                             | variable header | len | data ...
    len  = AEAD(u16 length)       (2 + 16 B)       response: salt | fixed header (27/43 B)
    data = AEAD(up to 0x3FFF B)   (n + 16 B)                 | data | len | data ...
                                                   data up to 0xFFFF B per chunk

    2022 fixed request header:   type 0 | u64 unix time | u16 length of the variable header
    2022 variable header:        ATYP addr port | u16 padding length | padding | first data
    2022 fixed response header:  type 1 | u64 unix time | request salt | u16 length of data

A 2022 header whose time is more than 30 s from ours, a response that does not name our
request's salt, and a salt seen in the last 60 s (SaltPool) are replays and end the stream;
so does any chunk that fails authentication. The 2017 edition has no timestamps: a repeated
salt is all a client can recognise.

`ClientCodec` is the client's side of one connection (what detour sends, what it reads);
`ServerCodec` is the server's, for the test servers and benchmarks.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from ..base import Endpoint
from ..socks import encode_address, parse_address
from ..wire import ProtocolError
from .key import ShadowsocksKey
from .methods import NONCE, TAG, Method, identity_headers, session_key

__all__ = [
    "MAX_CLOCK_SKEW",
    "SALT_WINDOW",
    "ClientCodec",
    "SaltPool",
    "ServerCodec",
    "ShadowsocksKey",
    "StreamError",
]

MAX_CLOCK_SKEW = 30.0  # seconds (SIP022 3.1.3)
SALT_WINDOW = 60.0  # how long salts are remembered (SIP022 3.1.4)
MAX_PADDING = 900
REQUEST_TYPE, RESPONSE_TYPE = 0, 1
_LENGTH = struct.Struct(">H")
_LONGEST_ADDRESS = 1 + 1 + 255 + 2  # ATYP, length, a name of 255 bytes, port
_FIXED_REQUEST = struct.Struct(">BQH")  # type, time, length


class StreamError(Exception):
    """The bytes are not a valid stream for this key: a wrong key, damage, a probe, or a
    replay. `reason` is one sentence, without secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SaltPool:
    """Salts seen in the last `window` seconds, exactly (SIP022 forbids Bloom filters: no
    false positives). Bounded: past `limit` entries the oldest are forgotten early."""

    def __init__(
        self,
        window: float = SALT_WINDOW,
        limit: int = 1 << 17,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._limit = limit
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def add(self, salt: bytes) -> bool:
        """Remember `salt`; False if it was seen within the window (a replay)."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at <= self._window and len(seen) < self._limit:
                break
            del seen[oldest]
        if salt in seen:
            return False
        seen[salt] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)


class _Aead:
    """One stream's AEAD with its counter nonce, which goes up by one per call, whatever the
    call's outcome: no nonce is used twice."""

    __slots__ = ("_aead", "_counter", "_decrypt_into", "_encrypt_into")

    def __init__(self, method: Method, key: bytes) -> None:
        aead = method.aead(key)
        self._aead = aead
        self._counter = 0
        # Newer cryptography releases seal and open into a buffer given (encrypt_into,
        # decrypt_into); older ones, which pyproject.toml still allows, return new bytes.
        self._encrypt_into = getattr(aead, "encrypt_into", None)
        self._decrypt_into = getattr(aead, "decrypt_into", None)

    def _nonce(self) -> bytes:
        nonce = self._counter.to_bytes(NONCE, "little")
        self._counter += 1
        return nonce

    def seal(self, data: bytes | memoryview) -> bytes:
        return self._aead.encrypt(self._nonce(), data, None)

    def seal_into(self, data: bytes | memoryview, out: memoryview) -> None:
        """`data` sealed into `out`, which is exactly len(data) + TAG bytes."""
        if self._encrypt_into is not None:
            self._encrypt_into(self._nonce(), data, None, out)
        else:
            out[:] = self._aead.encrypt(self._nonce(), data, None)

    def open(self, data: bytes | memoryview, what: str) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(), data, None)
        except InvalidTag:
            raise _failed(what) from None

    def open_into(self, data: bytes | memoryview, out: memoryview, what: str) -> None:
        """`data` opened into `out` (exactly len(data) - TAG bytes); StreamError when its tag
        is wrong, and then what `out` holds is not plaintext to release."""
        try:
            if self._decrypt_into is not None:
                self._decrypt_into(self._nonce(), data, None, out)
            else:
                out[:] = self._aead.decrypt(self._nonce(), data, None)
        except InvalidTag:
            raise _failed(what) from None


def _failed(what: str) -> StreamError:
    return StreamError(f"{what} failed authentication (a wrong key, or the stream was altered)")


_CHUNK_OVERHEAD = 2 + TAG + TAG  # a sealed length, and the payload's tag


class _Sender:
    """The chunks of one outgoing stream after its headers."""

    def __init__(self, method: Method, key: bytes, salt: bytes) -> None:
        self.max_payload = method.max_payload
        self.aead = _Aead(method, session_key(method, key, salt))

    def chunks(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """`data` as sealed chunks, in one new buffer: each chunk is sealed in place (no
        piece per chunk, no join). The buffer is the caller's: never written again."""
        size = len(data)
        if not size:
            return b""
        biggest = self.max_payload
        out = bytearray(size + -(-size // biggest) * _CHUNK_OVERHEAD)
        seal_into = self.aead.seal_into
        pack = _LENGTH.pack
        with memoryview(data) as view, memoryview(out) as sealed:
            at = 0
            for start in range(0, size, biggest):
                piece = view[start : start + biggest]
                length = len(piece)
                seal_into(pack(length), sealed[at : at + 2 + TAG])
                at += 2 + TAG
                seal_into(piece, sealed[at : at + length + TAG])
                at += length + TAG
        return out


class _Receiver:
    """Length and payload chunks of one incoming stream, after its headers.

    Each read is opened where it lies: every complete chunk in it straight into one output
    buffer. Only a chunk cut by the read's end is copied: its start is kept (`rest`, under
    one chunk) and completed with as many bytes of the next read as it lacks. A chunk that
    fails authentication ends the stream: nothing of that read is released (the output
    buffer is dropped), and every later read raises the same StreamError.
    """

    def __init__(self, aead: _Aead, max_payload: int, want: int | None = None) -> None:
        self.aead = aead
        self.max_payload = max_payload
        self.rest = bytearray()  # the start of a chunk the last read cut
        # The payload length announced (by a length chunk, or a 2022 response header) whose
        # chunk is not yet opened; None while a length chunk is next.
        self.want = want
        self.failed: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """The plaintext of the chunks `data` completes (b"" while none is complete)."""
        if self.failed is not None:
            raise StreamError(self.failed)
        try:
            return self._feed(data)
        except StreamError as exc:
            self.failed = exc.reason
            self.rest = bytearray()
            raise

    def _next_size(self) -> int:
        return 2 + TAG if self.want is None else self.want + TAG

    def _length(self, sealed: bytes | bytearray | memoryview) -> None:
        (length,) = _LENGTH.unpack(self.aead.open(sealed, "a length"))
        if length == 0 or length > self.max_payload:
            raise StreamError(f"a chunk announces {length} bytes (1-{self.max_payload})")
        self.want = length

    def _feed(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        rest = self.rest
        size = len(data)
        if len(rest) + size < self._next_size():
            rest += data
            return b""
        aead = self.aead
        out = bytearray(len(rest) + size)  # plaintext is never longer than what it came in
        produced = 0
        start = 0
        with memoryview(data) as view, memoryview(out) as plain:
            if rest:  # complete the chunk the last read cut, from the start of this one
                start = self._next_size() - len(rest)
                rest += view[:start]
                if self.want is None:
                    self._length(rest)
                else:
                    produced = self.want
                    aead.open_into(rest, plain[:produced], "a data chunk")
                    self.want = None
                self.rest = bytearray()
            want = self.want
            while True:
                if want is None:
                    if size - start < 2 + TAG:
                        break
                    self._length(view[start : start + 2 + TAG])
                    start += 2 + TAG
                    want = self.want
                    assert want is not None
                end = start + want + TAG
                if size < end:
                    break
                aead.open_into(view[start:end], plain[produced : produced + want], "a data chunk")
                produced += want
                start = end
                want = self.want = None
            if start < size:
                self.rest = bytearray(view[start:])
        if not produced:
            return b""
        del out[produced:]
        return out

    def pending(self) -> bool:
        """Whether the stream has stopped inside a chunk (truncated)."""
        return bool(self.rest) or self.want is not None


def _check_time(stamp: int, now: float) -> None:
    if abs(now - stamp) > MAX_CLOCK_SKEW:
        raise StreamError(
            f"the header's time is {abs(now - stamp):.0f} s from this computer's clock (more "
            f"than {MAX_CLOCK_SKEW:g} s: a replay, or a clock that is wrong)"
        )


class ClientCodec:
    """What a client sends and reads on one connection to `target`.

    `request(data)` is the first thing sent (salt, headers, `data`, all in one write, as
    SIP022 asks); `seal(data)` everything after; `open(data)` decodes what the server sends
    and raises StreamError when it is not valid.
    """

    def __init__(
        self,
        key: ShadowsocksKey,
        target: Endpoint,
        *,
        salts: SaltPool | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._key = key
        self._method = key.method
        self._address = encode_address(target.host, target.port)
        self._salts = salts
        self._clock = clock
        self._random = random
        prefix = key.prefix
        self.salt = prefix + random(self._method.salt_size - len(prefix))
        self._sender = _Sender(self._method, key.key, self.salt)
        self._sent = False
        self._incoming = bytearray()  # until the response's salt and header are in
        self._receiver: _Receiver | None = None

    @property
    def sent_request(self) -> bool:
        return self._sent

    def request(self, data: bytes = b"") -> bytes:
        assert not self._sent, "request() is called once"
        self._sent = True
        method = self._method
        if method.edition == 2017:
            room = method.max_payload - len(self._address)
            head = self._address + data[:room]
            return self.salt + self._sender.chunks(head) + self._sender.chunks(data[room:])
        padding = b""
        room = 0xFFFF - len(self._address) - 2
        first, rest = data[:room], data[room:]
        if not first:
            padding = self._random(1 + secrets.randbelow(MAX_PADDING))
        variable = self._address + _LENGTH.pack(len(padding)) + padding + first
        fixed = _FIXED_REQUEST.pack(REQUEST_TYPE, int(self._clock()), len(variable))
        seal = self._sender.aead.seal
        return b"".join(
            (
                self.salt,
                identity_headers(self._key.keys, self.salt),
                seal(fixed),
                seal(variable),
                self._sender.chunks(rest),
            )
        )

    def seal(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """`data` as chunks, in a new buffer of its own."""
        return self._sender.chunks(data)

    def open(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """The plaintext of the chunks `data` completes (b"" while none is complete), in a
        new buffer of its own."""
        receiver = self._receiver
        if receiver is not None:
            return receiver.feed(data)
        self._incoming += data
        return self._start_response()

    def truncated(self) -> bool:
        """Whether the server's stream ended inside a chunk or its header."""
        if self._receiver is None:
            return bool(self._incoming)
        return self._receiver.pending()

    def _start_response(self) -> bytes | bytearray:
        method = self._method
        size = method.salt_size
        header = 1 + 8 + size + 2 if method.edition == 2022 else 0
        need = size + (header + TAG if header else 0)
        incoming = self._incoming
        if len(incoming) < need:
            return b""
        salt = bytes(incoming[:size])
        aead = _Aead(method, session_key(method, self._key.key, salt))
        first_length = None
        if method.edition == 2022:
            plain = aead.open(memoryview(incoming)[size:need], "the response header")
            kind, stamp = struct.unpack_from(">BQ", plain)
            if kind != RESPONSE_TYPE:
                raise StreamError(f"the response header has type {kind}, not {RESPONSE_TYPE}")
            _check_time(stamp, self._clock())
            if plain[9 : 9 + size] != self.salt:
                raise StreamError(
                    "the response is not for this request (its request salt "
                    "differs: a replayed response)"
                )
            # The first data chunk's length is in the header (0: none, chunks follow).
            first_length = _LENGTH.unpack_from(plain, 9 + size)[0] or None
        if self._salts is not None and not self._salts.add(salt):
            raise StreamError("the server's salt was seen before (a replayed response)")
        self._receiver = _Receiver(aead, method.max_payload, first_length)
        with memoryview(incoming) as view:
            rest = bytes(view[need:])
        self._incoming = bytearray()
        return self._receiver.feed(rest)


class ServerCodec:
    """A server's side of one connection: decodes the request (its target, then data) and
    encodes the response. For tests and benchmarks; detour is the client.

    `users` are the 2022 user keys a multi-user server accepts behind identity headers
    (then `key.keys` is the server's identity key).
    """

    def __init__(
        self,
        key: ShadowsocksKey,
        *,
        salts: SaltPool | None = None,
        clock: Callable[[], float] = time.time,
        users: tuple[bytes, ...] = (),
    ) -> None:
        self._key = key
        self._method = key.method
        self._salts = salts
        self._clock = clock
        self._users = users
        self.target: Endpoint | None = None
        self.request_salt: bytes | None = None
        self._incoming = bytearray()
        self._receiver: _Receiver | None = None
        self._user_key = key.key
        self._sender: _Sender | None = None

    def open(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """Request data after the target; `target` is set once the header is in."""
        if self._receiver is not None:
            return self._receiver.feed(data)
        self._incoming += data
        rest = self._start_request()
        if rest is None:
            return b""
        assert self._receiver is not None
        plain = self._receiver.feed(rest)
        first, self._first = self._first, b""
        return first + plain if first else plain

    _first = b""

    def _start_request(self) -> bytes | None:
        """The bytes after the request's header once it is in (None before)."""
        method = self._method
        size = method.salt_size
        incoming = self._incoming
        if len(incoming) < size:
            return None
        salt = bytes(incoming[:size])
        at = size
        if method.edition == 2022 and self._users:
            if len(incoming) < at + 16:
                return None
            self._user_key = self._identify(salt, bytes(incoming[at : at + 16]))
            at += 16
        aead = _Aead(method, session_key(method, self._user_key, salt))
        if method.edition == 2022:
            if len(incoming) < at + _FIXED_REQUEST.size + TAG:
                return None
            # Peek: decrypt with a throw-away copy so a partial request can be retried.
            probe = _Aead(method, session_key(method, self._user_key, salt))
            fixed = probe.open(
                memoryview(incoming)[at : at + _FIXED_REQUEST.size + TAG], "the request header"
            )
            kind, stamp, length = _FIXED_REQUEST.unpack(fixed)
            if kind != REQUEST_TYPE:
                raise StreamError(f"the request header has type {kind}, not {REQUEST_TYPE}")
            _check_time(stamp, self._clock())
            end = at + _FIXED_REQUEST.size + TAG + length + TAG
            if len(incoming) < end:
                return None
            aead.open(memoryview(incoming)[at : at + _FIXED_REQUEST.size + TAG], "header")
            variable = aead.open(
                memoryview(incoming)[at + _FIXED_REQUEST.size + TAG : end], "the request header"
            )
            consumed, self.target = _parse_address(variable)
            if len(variable) < consumed + 2:
                raise StreamError("the request header ends before its padding length")
            (padding,) = _LENGTH.unpack_from(variable, consumed)
            first = variable[consumed + 2 + padding :]
            if consumed + 2 + padding > len(variable):
                raise StreamError("the request's padding runs past its header")
            if not first and padding == 0:
                raise StreamError("the request has neither data nor padding")
            self._first = bytes(first)
        else:
            if len(incoming) < at + 2 + TAG:
                return None
            probe = _Aead(method, session_key(method, self._user_key, salt))
            (length,) = _LENGTH.unpack(
                probe.open(memoryview(incoming)[at : at + 2 + TAG], "the request's length")
            )
            end = at + 2 + TAG + length + TAG
            if len(incoming) < end:
                return None
            aead.open(memoryview(incoming)[at : at + 2 + TAG], "length")
            plain = aead.open(memoryview(incoming)[at + 2 + TAG : end], "the request")
            consumed, self.target = _parse_address(plain)
            self._first = bytes(plain[consumed:])
        if self._salts is not None and not self._salts.add(salt):
            raise StreamError("the request's salt was seen before (a replay)")
        self.request_salt = salt
        self._receiver = _Receiver(aead, method.max_payload)
        with memoryview(incoming) as view:
            rest = bytes(view[end:])
        self._incoming = bytearray()
        return rest

    def _identify(self, salt: bytes, header: bytes) -> bytes:
        from blake3 import blake3
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        from .methods import _derive_key

        identity = self._key.keys[0]
        subkey = _derive_key("shadowsocks 2022 identity subkey", identity + salt, len(identity))
        decryptor = Cipher(algorithms.AES(subkey), modes.ECB()).decryptor()
        wanted = decryptor.update(header) + decryptor.finalize()
        for user in self._users:
            if blake3(user).digest(16) == wanted:
                return user
        raise StreamError("the identity header names no user of this server")

    def seal(self, data: bytes, *, random: Callable[[int], bytes] = os.urandom) -> bytes:
        """Response bytes for `data` (the first call adds the salt and the header)."""
        method = self._method
        if self._sender is not None:
            return self._sender.chunks(data)
        assert self.request_salt is not None, "the request comes first"
        salt = random(method.salt_size)
        self._sender = _Sender(method, self._user_key, salt)
        if method.edition == 2017:
            return salt + self._sender.chunks(data)
        first, rest = data[: method.max_payload], data[method.max_payload :]
        header = (
            struct.pack(">BQ", RESPONSE_TYPE, int(self._clock()))
            + self.request_salt
            + _LENGTH.pack(len(first))
        )
        seal = self._sender.aead.seal
        return salt + seal(header) + (seal(first) if first else b"") + self._sender.chunks(rest)

    def truncated(self) -> bool:
        if self._receiver is None:
            return bool(self._incoming)
        return self._receiver.pending()


def _parse_address(data: bytes | memoryview) -> tuple[int, Endpoint]:
    """ATYP addr port at the start of `data` (the SOCKS address codec's rules): (bytes
    consumed, endpoint)."""
    try:
        target, end = parse_address(bytes(data[:_LONGEST_ADDRESS]), 0, "the request")
    except ProtocolError as exc:
        raise StreamError(str(exc)) from None
    return end, target
