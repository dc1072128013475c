"""A client of MTProto proxies for the tests and benchmarks, written from the protocol's
description (core.telegram.org/mtproto/mtproto-transports, Telegram's MTProxy README and the
fake-TLS scheme as MTProxy clients implement it), independently of detour's own code in
transports/mtproto/faketls.py and secret.py: the fake-TLS tests check detour against it.

Nothing here comes from transports.mtproto: the secret's forms, the ClientHello, its HMAC
and timestamp, the server's proof, the TLS records, the obfuscated2 init made with the
secret (AES-256-CTR from `cryptography`, the keys as the MTProxy README gives them) and the
packet framing are all done here, so a test of the endpoint with this client checks
detour's code against a second implementation. (`Tag` is only the tags' byte values.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transports.mtproto import Tag

INIT_LEN = 64
# What an init may not start with (it would read as another protocol): abridged's tag,
# HTTP methods, intermediate's and padded intermediate's tags, a TLS record.
_FORBIDDEN_STARTS = (
    b"HEAD",
    b"POST",
    b"GET ",
    b"OPTI",
    b"\xee" * 4,
    b"\xdd" * 4,
    b"\x16\x03\x01\x02",
)


class Obfuscation:
    """Both directions of an obfuscated2 connection, the client's side."""

    def __init__(self, send_key: bytes, send_iv: bytes, recv_key: bytes, recv_iv: bytes) -> None:
        self._send = Cipher(algorithms.AES(send_key), modes.CTR(send_iv)).encryptor()
        self._recv = Cipher(algorithms.AES(recv_key), modes.CTR(recv_iv)).decryptor()

    def encrypt(self, data: bytes) -> bytes:
        return self._send.update(data)

    def decrypt(self, data: bytes) -> bytes:
        return self._recv.update(data)


def initiate(tag: Tag, dc: int, *, secret: bytes | None = None) -> tuple[bytes, Obfuscation]:
    """A client's 64-byte init for `tag` and DC `dc` (negative: media), keyed with a proxy's
    16-byte `secret`: the send key is bytes 8-40 and the IV 40-56, the receive key and IV
    the same 48 bytes reversed; with a secret each key is SHA-256(key + secret). Bytes
    56-64 (tag, DC, two random) go out encrypted, the rest as they are."""
    while True:
        init = bytearray(os.urandom(INIT_LEN))
        if init[0] != 0xEF and bytes(init[:4]) not in _FORBIDDEN_STARTS and any(init[4:8]):
            break
    init[56:60] = tag.value
    init[60:62] = struct.pack("<h", dc)
    send_key, send_iv = bytes(init[8:40]), bytes(init[40:56])
    back = bytes(init[8:56])[::-1]
    recv_key, recv_iv = back[:32], back[32:]
    if secret is not None:
        send_key = hashlib.sha256(send_key + secret).digest()
        recv_key = hashlib.sha256(recv_key + secret).digest()
    ob = Obfuscation(send_key, send_iv, recv_key, recv_iv)
    encrypted = ob.encrypt(bytes(init))
    return bytes(init[:56]) + encrypted[56:], ob


def encode_packet(tag: Tag, payload: bytes) -> bytes:
    """One transport packet: abridged (length in words), intermediate, or padded (0-15
    random bytes after the payload, counted in the length)."""
    if tag is Tag.ABRIDGED:
        words = len(payload) // 4
        head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return head + payload
    padding = os.urandom(os.urandom(1)[0] % 16) if tag is Tag.PADDED else b""
    return struct.pack("<I", len(payload) + len(padding)) + payload + padding


class PacketReader:
    """Packets' payloads from a decrypted stream (padding included, quick-ack bit dropped)."""

    def __init__(self, tag: Tag) -> None:
        self.tag = tag
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while True:
            if self.tag is Tag.ABRIDGED:
                if not self._buf:
                    break
                words = self._buf[0] & 0x7F
                head = 1
                if words == 0x7F:
                    if len(self._buf) < 4:
                        break
                    words, head = int.from_bytes(self._buf[1:4], "little"), 4
                length = words * 4
            else:
                if len(self._buf) < 4:
                    break
                length, head = struct.unpack("<I", self._buf[:4])[0] & 0x7FFFFFFF, 4
            if len(self._buf) < head + length:
                break
            out.append(self._buf[head : head + length])
            self._buf = self._buf[head + length :]
        return out


TLS_HELLO_SIZE = 517  # what Telegram's clients send


@dataclass(frozen=True)
class ClientSecret:
    key: bytes
    prefix: int | None  # 0xdd, 0xee or None (plain)
    domain: str | None


def read_secret(text: str) -> ClientSecret:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) == 16:
        return ClientSecret(raw, None, None)
    if raw[0] == 0xDD:
        return ClientSecret(raw[1:17], 0xDD, None)
    return ClientSecret(raw[1:17], 0xEE, raw[17:].decode())


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def client_hello(
    key: bytes,
    domain: str,
    *,
    timestamp: int | None = None,
    session_id: bytes | None = None,
    key_share: bytes | None = None,
) -> bytes:
    """A ClientHello record for `domain` whose random is the HMAC proof for `key`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    session_id = os.urandom(32) if session_id is None else session_id
    key_share = os.urandom(32) if key_share is None else key_share
    name = domain.encode()
    extensions = [
        _extension(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name),
        _extension(0x000A, b"\x00\x04\x00\x1d\x00\x17"),  # groups: x25519, secp256r1
        _extension(0x000D, b"\x00\x04\x04\x03\x08\x04"),  # signature algorithms
        _extension(0x002B, b"\x04\x03\x04\x03\x03"),  # versions: TLS 1.3, 1.2
        _extension(0x0033, b"\x00\x24\x00\x1d\x00\x20" + key_share),
    ]
    fixed = b"\x00\x06\x13\x01\x13\x02\x13\x03" + b"\x01\x00"  # suites; no compression

    def body_with(exts: list[bytes]) -> bytes:
        joined = b"".join(exts)
        return (
            b"\x03\x03" + bytes(32) + bytes([len(session_id)]) + session_id + fixed
            + struct.pack(">H", len(joined)) + joined
        )  # fmt: skip

    unpadded = 5 + 4 + len(body_with(extensions))
    pad = TLS_HELLO_SIZE - unpadded - 4
    if pad >= 0:
        extensions.append(_extension(0x0015, bytes(pad)))
    body = body_with(extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake
    proof = hmac.new(key, record, hashlib.sha256).digest()
    clock = struct.pack("<I", timestamp)
    random = proof[:28] + bytes(a ^ b for a, b in zip(proof[28:], clock, strict=True))
    return record[:11] + random + record[43:]


def split_records(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole TLS records (type, payload) at the start of `data`, and the rest."""
    records = []
    while len(data) >= 5:
        kind, length = data[0], int.from_bytes(data[3:5], "big")
        if len(data) < 5 + length:
            break
        records.append((kind, data[5 : 5 + length]))
        data = data[5 + length :]
    return records, data


def server_flight_size(data: bytes) -> int | None:
    """The size of the server's first flight (handshake, CCS, application data) once all
    three records are in `data`."""
    pos = 0
    for _ in range(3):
        if len(data) < pos + 5:
            return None
        pos += 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
    return pos if len(data) >= pos else None


def server_proof_ok(key: bytes, hello: bytes, flight: bytes) -> bool:
    """Whether the server's random is HMAC(key, client random + its flight, random zeroed)."""
    zeroed = flight[:11] + bytes(32) + flight[43:]
    expected = hmac.new(key, hello[11:43] + zeroed, hashlib.sha256).digest()
    return hmac.compare_digest(expected, flight[11:43])


def application_records(data: bytes, size: int = 16384) -> bytes:
    return b"".join(
        b"\x17\x03\x03" + struct.pack(">H", len(chunk)) + chunk
        for chunk in (data[i : i + size] for i in range(0, len(data), size))
    )


class ProxyConnection:
    """One MTProto connection through a proxy: send() and receive() carry packets'
    payloads; half_close() ends the sending side."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ob: Obfuscation,
        tag: Tag,
        fake_tls: bool,
        held: bytes = b"",
    ) -> None:
        self.reader, self.writer, self.ob, self.tag = reader, writer, ob, tag
        self.fake_tls = fake_tls
        self._records = held
        self._packets = PacketReader(tag)
        self._ready: list[bytes] = []

    def _out(self, data: bytes) -> None:
        self.writer.write(application_records(data) if self.fake_tls else data)

    def send(self, payload: bytes) -> None:
        self._out(self.ob.encrypt(encode_packet(self.tag, payload)))

    async def drain(self) -> None:
        await self.writer.drain()

    async def _raw(self) -> bytes:
        if not self.fake_tls:
            return await self.reader.read(1 << 20)
        while True:
            records, self._records = split_records(self._records)
            if records:
                assert all(kind == 0x17 for kind, _ in records), records
                return b"".join(payload for _, payload in records)
            more = await self.reader.read(1 << 20)
            if not more:
                return b""
            self._records += more

    async def receive(self) -> bytes | None:
        """The next packet's payload (padding included for padded framing); None at the end."""
        while not self._ready:
            raw = await self._raw()
            if not raw:
                return None
            self._ready.extend(self._packets.feed(self.ob.decrypt(raw)))
        return self._ready.pop(0)

    def half_close(self) -> None:
        if self.writer.can_write_eof():
            self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()


async def open_proxy(
    address: tuple[str, int], secret: str, dc: int = 2, tag: Tag | None = None
) -> ProxyConnection:
    """Connect through the MTProto proxy at `address` with `secret` to DC `dc`."""
    parsed = read_secret(secret)
    if tag is None:
        tag = Tag.PADDED if parsed.prefix is not None else Tag.INTERMEDIATE
    reader, writer = await asyncio.open_connection(*address, limit=1 << 20)
    held = b""
    if parsed.prefix == 0xEE:
        assert parsed.domain is not None
        hello = client_hello(parsed.key, parsed.domain)
        writer.write(hello)
        flight = b""
        while (size := server_flight_size(flight)) is None:
            more = await reader.read(65536)
            if not more:
                raise ConnectionError("the proxy closed instead of answering the ClientHello")
            flight += more
        if not server_proof_ok(parsed.key, hello, flight[:size]):
            raise ConnectionError("the server's random is no proof of the secret")
        held = flight[size:]
        writer.write(b"\x14\x03\x03\x00\x01\x01")
    init, ob = initiate(tag, dc, secret=parsed.key)
    while parsed.prefix != 0xEE and init[:2] == b"\x16\x03":
        # What a proxy with fake-TLS secrets too takes for TLS (1 in 65536; docs/telegram.md)
        init, ob = initiate(tag, dc, secret=parsed.key)
    connection = ProxyConnection(reader, writer, ob, tag, parsed.prefix == 0xEE, held)
    connection._out(init)
    return connection


async def start_proxy_wrapper(
    proxy: tuple[str, int], secret: str, dc: int = 2, chunk: int = 256 * 1024
):
    """Plain connections in, each carried through the MTProto proxy as packets (an
    integrity client on one side; start_unwrapper's DC on the other)."""
    from tests.support.mtproto import Adapter, _kept

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connection = await open_proxy(proxy, secret, dc, Tag.INTERMEDIATE)
        except (OSError, ConnectionError):
            writer.close()
            return

        async def up() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(chunk):
                    connection.send(data)
                    await connection.drain()
                connection.half_close()

        async def down() -> None:
            with contextlib.suppress(ConnectionError):
                while (payload := await connection.receive()) is not None:
                    writer.write(payload)
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()

        try:
            await asyncio.gather(up(), down(), return_exceptions=True)
        finally:
            connection.close()
            writer.close()

    return Adapter(await asyncio.start_server(_kept(handle), "127.0.0.1", 0, limit=1 << 20))


__all__ = [
    "INIT_LEN",
    "ClientSecret",
    "ProxyConnection",
    "application_records",
    "client_hello",
    "open_proxy",
    "read_secret",
    "server_flight_size",
    "server_proof_ok",
    "split_records",
    "start_proxy_wrapper",
]
