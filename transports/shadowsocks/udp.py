"""Shadowsocks UDP: each datagram one self-contained encrypted packet to the server's UDP port
(the same port as TCP), without sockets here: bytes in, bytes out.

AEAD, 2017 (SIP004 UDP): a fresh salt per packet, the session key derived from it, nonce 0.

    packet = salt | AEAD(ATYP addr port | payload)        (address: the destination going
                                                           out, the source coming back)

2022 (SIP022 UDP, the AES methods): a client session (8 random bytes) numbers its packets;
the 16-byte separate header is one AES block under the key, and its last 12 bytes are the
body's nonce; the body's key comes from the key and the sender's session id.

    packet = AES-ECB(session id (8) | packet id (8))
           | AEAD(main header | ATYP addr port | payload)
    client main header:  type 0 | u64 unix time | u16 padding length | padding
    server main header:  type 1 | u64 unix time | client session id (8) | u16 padding length
                         | padding

A server packet older or newer than 30 s, for another client session, or with a packet id
seen already (a sliding window per server session, as WireGuard's: `ReplayWindow`) is
dropped. 2022-blake3-chacha20-poly1305 uses XChaCha20 for UDP, which the cryptography
library lacks: that method carries no UDP here, and `udp_support` says so.

Malformed, unauthenticated and replayed packets raise PacketError (one sentence, no
secrets); the session counts and drops them (dialer side: datagrams.py of transports).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..base import Endpoint
from ..socks import encode_address
from ..socks import parse_address as read_address
from ..wire import ProtocolError
from .codec import MAX_CLOCK_SKEW, ShadowsocksKey
from .methods import NONCE, TAG, _derive_key, session_key

__all__ = [
    "ClientPackets",
    "PacketError",
    "ReplayWindow",
    "ServerPackets",
    "udp_support",
]

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_CLIENT_2022 = struct.Struct(">BQH")  # type, time, padding length
_SERVER_2022 = struct.Struct(">BQ8sH")  # type, time, client session, padding length
REQUEST_TYPE, RESPONSE_TYPE = 0, 1
WINDOW = 4096  # packet ids a 2022 receiver remembers per session


class PacketError(Exception):
    """A packet that is not valid for this key: damaged, a wrong key, a probe or a replay."""


def udp_support(key: ShadowsocksKey) -> str | None:
    """Why this key's method carries no UDP here, or None."""
    if key.method.edition == 2022 and not key.method.aes:
        return f"{key.method.name} uses XChaCha20 for UDP, which detour's cryptography lacks"
    if key.method.edition == 2022 and len(key.keys) > 1:
        return "UDP with identity headers (several keys) is not supported yet"
    return None


def parse_address(data: bytes) -> tuple[int, Endpoint]:
    """ATYP addr port at the start of `data`: (bytes used, endpoint); PacketError."""
    try:
        address, end = read_address(data, 0, "the packet")
    except ProtocolError as exc:
        raise PacketError(str(exc)) from None
    return end, address


class ReplayWindow:
    """Which packet ids were seen, of the last WINDOW below the highest (RFC 6479's idea
    with a plain integer bitmap): a packet id is accepted once, and never when it is older
    than the window."""

    def __init__(self, size: int = WINDOW) -> None:
        self.size = size
        self.highest = -1
        self._bits = 0  # bit i: highest - i was seen

    def check(self, packet: int) -> bool:
        """Whether `packet` is new (without remembering it)."""
        if packet > self.highest:
            return True
        behind = self.highest - packet
        return behind < self.size and not (self._bits >> behind) & 1

    def accept(self, packet: int) -> None:
        if packet > self.highest:
            shift = packet - self.highest
            if shift >= self.size:
                self._bits = 1
            else:
                self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1)
            self.highest = packet
        else:
            self._bits |= 1 << (self.highest - packet)


def _seal_2017(key: ShadowsocksKey, body: bytes, random: Callable[[int], bytes]) -> bytes:
    method = key.method
    salt = key.prefix + random(method.salt_size - len(key.prefix))
    aead = method.aead(session_key(method, key.key, salt))
    return salt + aead.encrypt(bytes(NONCE), body, None)


def _open_2017(key: ShadowsocksKey, packet: bytes) -> bytes:
    method = key.method
    if len(packet) < method.salt_size + TAG:
        raise PacketError(f"a packet of {len(packet)} bytes is shorter than salt and tag")
    salt = packet[: method.salt_size]
    aead = method.aead(session_key(method, key.key, salt))
    try:
        return aead.decrypt(bytes(NONCE), packet[method.salt_size :], None)
    except InvalidTag:
        raise PacketError("the packet failed authentication (a wrong key, or altered)") from None


class _Sessions2022:
    """Sealing and opening 2022 packets for one side: its own session and packet ids, and
    the replay windows of the sessions it hears from."""

    def __init__(self, key: ShadowsocksKey, clock: Callable[[], float]) -> None:
        self.key = key
        self.clock = clock
        self.session = os.urandom(8)
        self.packet = 0
        self._body_key = key.method.aead(_subkey(key, self.session))
        self.windows: dict[bytes, ReplayWindow] = {}
        # The separate header's AES block, both ways: ECB keeps no state between blocks, so
        # one encryptor and one decryptor serve every packet.
        cipher = Cipher(algorithms.AES(key.key), modes.ECB())
        self._header_out, self._header_in = cipher.encryptor(), cipher.decryptor()
        # The body AEADs of the last 64 peer sessions with an authentic packet, so that a
        # packet costs no key derivation.
        self._peers: dict[bytes, Any] = {}

    def seal(self, main: bytes) -> bytes:
        header = self.session + _U64.pack(self.packet)
        self.packet += 1
        sealed = self._body_key.encrypt(header[4:], main, None)
        return self._header_out.update(header) + sealed

    def open(self, packet: bytes) -> tuple[bytes, bytes, int]:
        """(the sender's session id, the main header and payload, packet id); the packet id
        must be accepted (`accept`) once the body checks out."""
        if len(packet) < 16 + TAG + 1:
            raise PacketError(f"a packet of {len(packet)} bytes is too short for 2022")
        header = self._header_in.update(packet[:16])
        session, (packet_id,) = header[:8], _U64.unpack_from(header, 8)
        window = self.windows.get(session)
        if window is not None and not window.check(packet_id):
            raise PacketError("a packet seen before (a replay)")
        aead: Any = self._peers.get(session)
        if aead is None:
            aead = self.key.method.aead(_subkey(self.key, session))
        try:
            body = aead.decrypt(header[4:], packet[16:], None)
        except InvalidTag:
            raise PacketError(
                "the packet failed authentication (a wrong key, or altered)"
            ) from None
        if session not in self._peers:  # authentic: only a holder of the key seals it
            if len(self._peers) >= 64:
                self._peers.pop(next(iter(self._peers)))
            self._peers[session] = aead
        return session, body, packet_id

    def accept(self, session: bytes, packet_id: int) -> None:
        window = self.windows.get(session)
        if window is None:
            if len(self.windows) >= 64:  # sessions the peer began and left
                self.windows.pop(next(iter(self.windows)))
            window = self.windows[session] = ReplayWindow()
        window.accept(packet_id)

    def check_time(self, stamp: int) -> None:
        if abs(stamp - self.clock()) > MAX_CLOCK_SKEW:
            raise PacketError("the packet's time is more than 30 s from ours (a replay?)")


def _subkey(key: ShadowsocksKey, session: bytes) -> bytes:
    return _derive_key("shadowsocks 2022 session subkey", key.key + session, key.method.key_size)


class ClientPackets:
    """A client's packets for one association: `seal(target, payload)` to the server,
    `open(packet)` -> (source, payload) from it."""

    def __init__(
        self,
        key: ShadowsocksKey,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        why = udp_support(key)
        if why is not None:
            raise ValueError(why)
        self.key = key
        self.random = random
        self._2022 = _Sessions2022(key, clock) if key.method.edition == 2022 else None

    def seal(self, target: Endpoint, payload: bytes) -> bytes:
        address = encode_address(target.host, target.port)
        if self._2022 is None:
            return _seal_2017(self.key, address + payload, self.random)
        now = int(self._2022.clock())
        return self._2022.seal(_CLIENT_2022.pack(REQUEST_TYPE, now, 0) + address + payload)

    def open(self, packet: bytes) -> tuple[Endpoint, bytes]:
        if self._2022 is None:
            body = _open_2017(self.key, packet)
            used, source = parse_address(body)
            return source, body[used:]
        sessions = self._2022
        session, body, packet_id = sessions.open(packet)
        if len(body) < _SERVER_2022.size:
            raise PacketError("the packet's header is cut short")
        kind, stamp, client, padding = _SERVER_2022.unpack_from(body)
        if kind != RESPONSE_TYPE:
            raise PacketError(f"a packet of type {kind} from the server")
        if client != sessions.session:
            raise PacketError("a packet for another client session")
        sessions.check_time(stamp)
        start = _SERVER_2022.size + padding
        used, source = parse_address(body[start:])
        sessions.accept(session, packet_id)
        return source, body[start + used :]


class ServerPackets:
    """The server's side (for tests and benchmarks): `open(packet)` -> (client session,
    target, payload), `seal(client session, source, payload)`."""

    def __init__(self, key: ShadowsocksKey, *, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self._2022 = _Sessions2022(key, clock) if key.method.edition == 2022 else None

    def open(self, packet: bytes) -> tuple[bytes, Endpoint, bytes]:
        if self._2022 is None:
            body = _open_2017(self.key, packet)
            used, target = parse_address(body)
            return b"", target, body[used:]
        sessions = self._2022
        session, body, packet_id = sessions.open(packet)
        if len(body) < _CLIENT_2022.size:
            raise PacketError("the packet's header is cut short")
        kind, stamp, padding = _CLIENT_2022.unpack_from(body)
        if kind != REQUEST_TYPE:
            raise PacketError(f"a packet of type {kind} from a client")
        sessions.check_time(stamp)
        start = _CLIENT_2022.size + padding
        used, target = parse_address(body[start:])
        sessions.accept(session, packet_id)
        return session, target, body[start + used :]

    def seal(self, client: bytes, source: Endpoint, payload: bytes) -> bytes:
        address = encode_address(source.host, source.port)
        if self._2022 is None:
            return _seal_2017(self.key, address + payload, os.urandom)
        now = int(self._2022.clock())
        main = _SERVER_2022.pack(RESPONSE_TYPE, now, client, 0)
        return self._2022.seal(main + address + payload)
