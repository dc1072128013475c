"""Shadowsocks UDP packets (transports/shadowsocks/udp.py) without sockets: known vectors
for the AEAD packet, the 2022 packet's separate header and numbering, and what a client
refuses from a server (another key, another session, a replay, a stale time)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transports import Endpoint
from transports.shadowsocks.server import shadowsocks_server
from transports.shadowsocks.udp import (
    WINDOW,
    ClientPackets,
    PacketError,
    ReplayWindow,
    ServerPackets,
    udp_support,
)

STUN = Endpoint("192.0.2.1", 3478)
KEY_2022 = base64.b64encode(bytes(range(16))).decode()


def _server(method: str, password: str):
    return shadowsocks_server("127.0.0.1", 8388, method, password)


def test_aead_packet_known_vector() -> None:
    """aes-128-gcm, password "test", salt 00..0f: the packet as SIP004 builds it."""
    server = _server("aes-128-gcm", "test")
    packet = ClientPackets(server.key, random=lambda n: bytes(range(n))).seal(STUN, b"hello")
    assert packet.hex() == (
        "000102030405060708090a0b0c0d0e0f"  # salt
        "c59c8004c22abe9091ed872c0ccf535bd98fdf02073445406178c963"  # AEAD(addr|hello)|tag
    )
    # The same, built from the definitions: EVP_BytesToKey(MD5), HKDF-SHA1 "ss-subkey",
    # AES-GCM with a zero nonce over  ATYP 1 | 192.0.2.1 | 3478 | payload.
    key = hashlib.md5(b"test").digest()
    salt = bytes(range(16))
    subkey = HKDF(hashes.SHA1(), 16, salt, b"ss-subkey").derive(key)
    body = b"\x01" + bytes([192, 0, 2, 1]) + (3478).to_bytes(2, "big") + b"hello"
    assert packet == salt + AESGCM(subkey).encrypt(bytes(12), body, None)


@pytest.mark.parametrize("method", ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-192-gcm"])
def test_aead_round_trip_with_names(method: str) -> None:
    key = _server(method, "pw").key
    client, server = ClientPackets(key), ServerPackets(key)
    session, target, payload = server.open(client.seal(Endpoint("stun.example", 19302), b"x"))
    assert (target, payload) == (Endpoint("stun.example", 19302), b"x")
    assert client.open(server.seal(session, target, b"y" * 1400)) == (target, b"y" * 1400)


def test_aead_wrong_key_and_damage_are_packet_errors() -> None:
    client = ClientPackets(_server("aes-128-gcm", "a").key)
    packet = ServerPackets(_server("aes-128-gcm", "b").key).seal(b"", STUN, b"z")
    with pytest.raises(PacketError, match="authentication"):
        client.open(packet)
    with pytest.raises(PacketError, match="shorter"):
        client.open(b"\0" * 20)


def test_2022_separate_header_numbers_packets_under_the_key() -> None:
    key = _server("2022-blake3-aes-128-gcm", KEY_2022).key
    client = ClientPackets(key, clock=lambda: 1_700_000_000)
    first, second = (client.seal(STUN, b"p") for _ in range(2))
    decryptor = Cipher(algorithms.AES(bytes(range(16))), modes.ECB()).decryptor()
    one = decryptor.update(first[:16])
    two = Cipher(algorithms.AES(bytes(range(16))), modes.ECB()).decryptor().update(second[:16])
    assert one[:8] == two[:8]  # one client session
    assert int.from_bytes(one[8:], "big") == 0 and int.from_bytes(two[8:], "big") == 1
    server = ServerPackets(key, clock=lambda: 1_700_000_010)
    session, target, payload = server.open(first)
    assert (session, target, payload) == (one[:8], STUN, b"p")
    with pytest.raises(PacketError, match="replay"):
        server.open(first)  # the same packet id again


def test_2022_client_refuses_other_sessions_replays_and_stale_times() -> None:
    key = _server("2022-blake3-aes-256-gcm", base64.b64encode(bytes(32)).decode()).key
    now = 1_700_000_000
    client = ClientPackets(key, clock=lambda: now)
    server = ServerPackets(key, clock=lambda: now)
    session, _, _ = server.open(client.seal(STUN, b"q"))
    answer = server.seal(session, STUN, b"a")
    assert client.open(answer) == (STUN, b"a")
    with pytest.raises(PacketError, match="replay"):
        client.open(answer)
    with pytest.raises(PacketError, match="another client session"):
        client.open(server.seal(b"12345678", STUN, b"b"))
    late = ServerPackets(key, clock=lambda: now - 31)
    with pytest.raises(PacketError, match="30 s"):
        client.open(late.seal(session, STUN, b"c"))


def test_replay_window() -> None:
    window = ReplayWindow(size=8)
    for packet in (0, 2, 1, 9):
        assert window.check(packet)
        window.accept(packet)
    assert not window.check(9) and not window.check(2)  # seen
    assert not window.check(1)  # older than the window (9 - 8)
    assert window.check(5) and window.check(10)
    window.accept(2**63)  # a jump far ahead costs nothing
    assert not window.check(5) and window.check(2**63 - 1)
    assert WINDOW >= 1024


def test_which_keys_carry_no_udp() -> None:
    chacha = _server("2022-blake3-chacha20-poly1305", base64.b64encode(bytes(32)).decode())
    assert "XChaCha20" in (udp_support(chacha.key) or "")
    several = _server("2022-blake3-aes-128-gcm", f"{KEY_2022}:{KEY_2022}")
    assert "identity" in (udp_support(several.key) or "")
    assert udp_support(_server("aes-128-gcm", "pw").key) is None
    with pytest.raises(ValueError, match="XChaCha20"):
        ClientPackets(chacha.key)


def test_2022_peer_sessions_kept_open_many_packets_and_stay_bounded() -> None:
    """The body key of a server session is derived once and kept (64 sessions at most);
    a kept session's packets are still checked: altered ones fail, replays are refused."""
    key = _server("2022-blake3-aes-128-gcm", KEY_2022).key
    now = 1_700_000_000
    client = ClientPackets(key, clock=lambda: now)
    servers = [ServerPackets(key, clock=lambda: now) for _ in range(70)]
    session, _, _ = servers[0].open(client.seal(STUN, b"q"))
    for n in range(5):
        assert client.open(servers[0].seal(session, STUN, bytes([n]))) == (STUN, bytes([n]))
    altered = bytearray(servers[0].seal(session, STUN, b"z"))
    altered[-1] ^= 1
    with pytest.raises(PacketError, match="authentication"):
        client.open(bytes(altered))
    for server in servers[1:]:
        assert client.open(server.seal(session, STUN, b"s")) == (STUN, b"s")
    sessions = client._2022
    assert sessions is not None and len(sessions._peers) <= 64
    assert client.open(servers[0].seal(session, STUN, b"back")) == (STUN, b"back")
