"""Shadowsocks without sockets (transports/shadowsocks): keys against independent
implementations, the stream formats both ways, and the checks that reject replayed,
altered and cut streams."""

from __future__ import annotations

import base64
import struct

import pytest

from transports import Endpoint
from transports.shadowsocks import (
    METHODS,
    ClientCodec,
    MethodError,
    SaltPool,
    ServerCodec,
    ShadowsocksKey,
    StreamError,
    method_named,
    shadowsocks_server,
)
from transports.shadowsocks.codec import MAX_CLOCK_SKEW
from transports.shadowsocks.methods import (
    TAG,
    _derive_key,
    parse_psks,
    password_key,
    session_key,
)

AEAD = ["chacha20-ietf-poly1305", "aes-256-gcm", "aes-192-gcm", "aes-128-gcm"]
EDITION_2022 = [
    "2022-blake3-aes-128-gcm",
    "2022-blake3-aes-256-gcm",
    "2022-blake3-chacha20-poly1305",
]
TARGET = Endpoint("web.telegram.org", 443)
NOW = 1_700_000_000.0


def key_for(name: str, secret: str | None = None) -> ShadowsocksKey:
    method = METHODS[name]
    if method.edition == 2022:
        psk = secret or base64.b64encode(bytes(range(method.key_size))).decode()
        return ShadowsocksKey(method, parse_psks(method, psk))
    return ShadowsocksKey(method, (password_key(method, secret or "correct horse"),))


def pair(name: str, **client_options) -> tuple[ClientCodec, ServerCodec]:
    key = key_for(name)
    client = ClientCodec(key, TARGET, clock=lambda: NOW, **client_options)
    server = ServerCodec(key, clock=lambda: NOW)
    return client, server


# --- keys -----------------------------------------------------------------------------------


def test_password_key_is_openssls_evp_bytes_to_key() -> None:
    # openssl enc -aes-256-cbc -k 'barfoo!' -nosalt -P -md md5  (key=...)
    expected = "B3ADC47839E047EB228870526DC8FC30B347287FFCA3045DCEA06B3FDF090ACB"
    assert password_key(METHODS["aes-256-gcm"], "barfoo!").hex().upper() == expected
    assert password_key(METHODS["aes-128-gcm"], "barfoo!").hex().upper() == expected[:32]


def test_2022_session_subkey_matches_an_independent_implementation() -> None:
    """SIP022 publishes no test vectors; this pair comes from another implementation's
    tests (Java, BLAKE3 from Bouncy Castle)."""
    key = base64.b64decode("Lc3tTx0BY6ZJ/fCwOx3JvF0I/anhwJBO5p2+FA5Vce4=")
    salt = base64.b64decode("3oFO0VyLyGI4nFN0M9P+62vPND/L6v8IingaPJWTbJA=")
    subkey = session_key(METHODS["2022-blake3-aes-256-gcm"], key, salt)
    assert base64.b64encode(subkey).decode() == "EdNE+4U8dVnHT0+poAFDK2bdlwfrHT61sUNr9WYPh+E="


def test_identity_subkey_derivation_matches_an_independent_implementation() -> None:
    derived = _derive_key(
        "shadowsocks 2022 identity subkey",
        b"Personal search-enabled assistant for programmers",
        32,
    )
    assert base64.b64encode(derived).decode() == "nb91ZIjdNzFcPmGRS3Lg7m+muVqat549+RSDluyVN4c="


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rc4-md5", "stream cipher without authentication"),
        ("aes-256-cfb", "stream cipher without authentication"),
        ("none", "does not encrypt"),
        ("xchacha20-ietf-poly1305", "XChaCha20"),
        ("aes-257-gcm", "unknown cipher 'aes-257-gcm'"),
    ],
)
def test_methods_detour_does_not_speak_are_named(text: str, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        method_named(text)


def test_method_names_are_case_insensitive_and_aliases_work() -> None:
    assert method_named("AES-256-GCM").name == "aes-256-gcm"
    assert method_named("chacha20-poly1305").name == "chacha20-ietf-poly1305"


@pytest.mark.parametrize(
    ("method", "password", "message"),
    [
        ("2022-blake3-aes-128-gcm", "not base64!", "not base64"),
        ("2022-blake3-aes-128-gcm", base64.b64encode(bytes(32)).decode(), "is 32 bytes"),
        ("2022-blake3-aes-256-gcm", base64.b64encode(bytes(16)).decode(), "needs 32"),
        (
            "2022-blake3-chacha20-poly1305",
            f"{base64.b64encode(bytes(32)).decode()}:{base64.b64encode(bytes(32)).decode()}",
            "only with the AES methods",
        ),
        ("aes-256-gcm", "", "password is empty"),
    ],
)
def test_bad_keys_are_named_without_quoting_them(method: str, password: str, message: str) -> None:
    with pytest.raises(MethodError, match=message) as caught:
        shadowsocks_server("example.com", 8388, method, password)
    if password:
        assert password not in str(caught.value)


def test_a_prefix_must_leave_random_salt() -> None:
    shadowsocks_server("h", 1, "chacha20-ietf-poly1305", "pw", prefix=b"\x16\x03\x01" * 8)
    with pytest.raises(MethodError, match="at most 8"):
        shadowsocks_server("h", 1, "aes-128-gcm", "pw", prefix=b"HTTP/1.1 ")


# --- streams both ways ----------------------------------------------------------------------


@pytest.mark.parametrize("name", AEAD + EDITION_2022)
def test_request_and_response_round_trip(name: str) -> None:
    client, server = pair(name)
    big = bytes(range(256)) * 600  # several chunks in either edition
    wire = client.request(b"hello") + client.seal(big)
    # Fed in awkward pieces: one byte, then a prime-sized stride.
    got = server.open(wire[:1])
    for start in range(1, len(wire), 997):
        got += server.open(wire[start : start + 997])
    assert server.target == TARGET
    assert got == b"hello" + big
    back = server.seal(b"world") + server.seal(big)
    received = b"".join(client.open(back[i : i + 1000]) for i in range(0, len(back), 1000))
    assert received == b"world" + big
    assert not client.truncated() and not server.truncated()


@pytest.mark.parametrize("name", EDITION_2022)
def test_a_2022_request_without_data_carries_padding(name: str) -> None:
    client, server = pair(name)
    wire = client.request()
    method = METHODS[name]
    fixed = 1 + 8 + 2 + 16
    assert len(wire) > method.salt_size + fixed + len(b"\x03\x10web.telegram.org\x01\xbb") + 2
    assert server.open(wire) == b""
    assert server.target == TARGET


def test_chunks_stay_under_each_editions_limit() -> None:
    client, _ = pair("aes-128-gcm")
    client.request()
    wire = client.seal(bytes(0x3FFF + 1))
    # two chunks: (2+16) + (0x3FFF+16), then (2+16) + (1+16)
    assert len(wire) == (2 + 16) * 2 + 0x3FFF + 16 + 1 + 16
    client, _ = pair("2022-blake3-aes-128-gcm")
    client.request(b"x")
    assert len(client.seal(bytes(0xFFFF))) == 2 + 16 + 0xFFFF + 16


def test_the_prefix_starts_every_salt() -> None:
    key = ShadowsocksKey(METHODS["chacha20-ietf-poly1305"], (bytes(32),), prefix=b"POST ")
    client = ClientCodec(key, TARGET)
    assert client.request(b"x").startswith(b"POST ")
    other = ClientCodec(key, TARGET)
    assert other.salt != client.salt  # the rest stays random


def test_identity_headers_reach_the_user_behind_them() -> None:
    method = METHODS["2022-blake3-aes-256-gcm"]
    identity, user, other = (bytes([n]) * 32 for n in (1, 2, 3))
    psks = ":".join(base64.b64encode(k).decode() for k in (identity, user))
    client = ClientCodec(
        ShadowsocksKey(method, parse_psks(method, psks)), TARGET, clock=lambda: NOW
    )
    server = ServerCodec(
        ShadowsocksKey(method, (identity,)), clock=lambda: NOW, users=(other, user)
    )
    assert server.open(client.request(b"data")) == b"data"
    assert client.open(server.seal(b"back")) == b"back"
    stranger = ServerCodec(ShadowsocksKey(method, (identity,)), clock=lambda: NOW, users=(other,))
    with pytest.raises(StreamError, match="names no user"):
        stranger.open(
            ClientCodec(
                ShadowsocksKey(method, parse_psks(method, psks)), TARGET, clock=lambda: NOW
            ).request(b"x")
        )


# --- rejected streams -----------------------------------------------------------------------


@pytest.mark.parametrize("name", AEAD + EDITION_2022)
def test_a_changed_byte_fails_authentication(name: str) -> None:
    client, server = pair(name)
    server.open(client.request(b"hello"))
    response = bytearray(server.seal(b"payload"))
    response[-1] ^= 0x01
    with pytest.raises(StreamError, match="failed authentication"):
        client.open(bytes(response))


@pytest.mark.parametrize("name", AEAD + EDITION_2022)
def test_a_wrong_key_fails_at_once(name: str) -> None:
    client, _ = pair(name)
    wrong = ServerCodec(
        key_for(
            name,
            "other password"
            if "2022" not in name
            else base64.b64encode(bytes(METHODS[name].key_size)).decode(),
        )
    )
    with pytest.raises(StreamError, match="failed authentication"):
        wrong.open(client.request(b"hello"))


@pytest.mark.parametrize("name", EDITION_2022)
def test_a_replayed_2022_response_is_rejected(name: str) -> None:
    """A response recorded from one connection, played to another: its header names the
    first request's salt."""
    first, server = pair(name)
    server.open(first.request(b"a"))
    recorded = server.seal(b"secret answer")
    second, _ = pair(name)
    second.request(b"a")
    with pytest.raises(StreamError, match="not for this request"):
        second.open(recorded)


@pytest.mark.parametrize("name", AEAD + EDITION_2022)
def test_a_server_salt_seen_before_is_a_replay(name: str) -> None:
    salts = SaltPool()
    key = key_for(name)
    server_salt = bytes(range(METHODS[name].salt_size))
    responses = []
    for _ in range(2):
        client = ClientCodec(key, TARGET, salts=salts, clock=lambda: NOW)
        server = ServerCodec(key, clock=lambda: NOW)
        server.open(client.request(b"a"))
        responses.append((client, server.seal(b"b", random=lambda n: server_salt[:n])))
    assert responses[0][0].open(responses[0][1]) == b"b"
    with pytest.raises(StreamError, match="seen before"):
        responses[1][0].open(responses[1][1])


@pytest.mark.parametrize("skew", [-(MAX_CLOCK_SKEW + 5), MAX_CLOCK_SKEW + 5])
def test_a_2022_header_from_another_time_is_a_replay(skew: float) -> None:
    key = key_for("2022-blake3-aes-128-gcm")
    client = ClientCodec(key, TARGET, clock=lambda: NOW)
    server = ServerCodec(key, clock=lambda: NOW + skew)
    with pytest.raises(StreamError, match="clock"):
        server.open(client.request(b"a"))
    # and the other way: the response's time
    client = ClientCodec(key, TARGET, clock=lambda: NOW)
    server = ServerCodec(key, clock=lambda: NOW)
    server.open(client.request(b"a"))
    late = ServerCodec(key, clock=lambda: NOW + skew)
    late.request_salt = server.request_salt
    with pytest.raises(StreamError, match="clock"):
        client.open(late.seal(b"b"))


def test_a_server_replay_of_a_request_is_rejected() -> None:
    salts = SaltPool()
    key = key_for("2022-blake3-aes-256-gcm")
    request = ClientCodec(key, TARGET, clock=lambda: NOW).request(b"GET /")
    ServerCodec(key, salts=salts, clock=lambda: NOW).open(request)
    with pytest.raises(StreamError, match="seen before"):
        ServerCodec(key, salts=salts, clock=lambda: NOW).open(request)


def test_a_response_played_back_as_a_request_is_rejected() -> None:
    """A response stream played back to a server as if it were a request: its header has
    another length (and type), so it does not even authenticate."""
    key = key_for("2022-blake3-aes-128-gcm")
    client = ClientCodec(key, TARGET, clock=lambda: NOW)
    server = ServerCodec(key, clock=lambda: NOW)
    server.open(client.request(b"a"))
    response = server.seal(b"b" * 40)
    with pytest.raises(StreamError, match="failed authentication"):
        ServerCodec(key, clock=lambda: NOW).open(response)


def test_a_stream_cut_inside_a_chunk_is_truncated() -> None:
    client, server = pair("aes-256-gcm")
    server.open(client.request(b"a"))
    response = server.seal(b"x" * 100)
    client.open(response[:-5])
    assert client.truncated()


def test_salt_pool_forgets_after_its_window_and_at_its_limit() -> None:
    now = [0.0]
    pool = SaltPool(window=60, limit=3, clock=lambda: now[0])
    assert pool.add(b"a") and not pool.add(b"a")
    now[0] = 61
    assert pool.add(b"a")  # forgotten: outside the window
    for salt in (b"b", b"c", b"d"):
        assert pool.add(salt)
    assert len(pool) <= 3


def test_length_chunk_of_zero_is_rejected() -> None:
    client, server = pair("aes-128-gcm")
    server.open(client.request(b"a"))
    first = server.seal(b"x")
    client.open(first)
    # Forge a zero-length chunk with the server's own sender (it would never send one).
    assert server._sender is not None
    zero = server._sender.aead.seal(struct.pack(">H", 0))
    with pytest.raises(StreamError, match="announces 0 bytes"):
        client.open(zero)


# --- reads that cut chunks anywhere (the receiver opens each read where it lies) -----------


def _response(name: str, pieces: list[bytes]) -> tuple[ClientCodec, bytes]:
    client, server = pair(name)
    server.open(client.request(b"a"))
    return client, b"".join(server.seal(piece) for piece in pieces)


PIECES = [b"first", bytes(range(40)), b"x", b"the fourth chunk", b"last"]


@pytest.mark.parametrize("name", ["aes-128-gcm", "chacha20-ietf-poly1305", *EDITION_2022])
def test_chunks_cut_anywhere_across_reads_decode_the_same(name: str) -> None:
    _, wire = _response(name, PIECES)
    for cut in range(len(wire) + 1):
        client, again = _response(name, PIECES)
        assert len(again) == len(wire)  # random salts: the same layout, other bytes
        got = client.open(again[:cut])
        got += client.open(again[cut:])
        assert got == b"".join(PIECES), cut
        assert not client.truncated()
    # Three reads, the middle one inside a chunk or across several.
    for cuts in ((1, 2), (30, 31), (20, 90), (len(wire) - 1, len(wire))):
        client, wire = _response(name, PIECES)
        parts = (wire[: cuts[0]], wire[cuts[0] : cuts[1]], wire[cuts[1] :])
        assert b"".join(client.open(part) for part in parts) == b"".join(PIECES)


@pytest.mark.parametrize("name", ["aes-256-gcm", "2022-blake3-chacha20-poly1305"])
def test_many_chunks_in_one_read_come_out_in_one_buffer(name: str) -> None:
    pieces = [bytes([n]) * (1 + n) for n in range(200)]
    client, wire = _response(name, pieces)
    got = client.open(wire)
    assert got == b"".join(pieces)
    kept = bytes(got)
    more = client.open(wire[:0])
    assert more == b"" and got == kept  # what was returned is never written again


def test_a_chunk_cut_across_many_reads_is_completed_from_each() -> None:
    client, wire = _response("aes-128-gcm", [bytes(range(256)) * 63])  # one 16128-byte chunk
    got = b"".join(client.open(wire[i : i + 7]) for i in range(0, len(wire), 7))
    assert got == bytes(range(256)) * 63 and not client.truncated()


@pytest.mark.parametrize("name", ["chacha20-ietf-poly1305", "2022-blake3-aes-128-gcm"])
def test_a_failed_tag_in_a_run_releases_nothing_after_it(name: str) -> None:
    client, wire = _response(name, PIECES)
    # Where the third piece's payload chunk lies: the end of the wire holds the last two
    # pieces' chunks (2+16 + n+16 each).
    tail = sum(2 + TAG + len(piece) + TAG for piece in PIECES[2:])
    third = len(wire) - tail + 2 + TAG  # its payload's first byte
    altered = bytearray(wire)
    altered[third] ^= 1
    got = client.open(altered[:10])  # the salt's start: nothing yet
    with pytest.raises(StreamError, match="failed authentication"):
        got += client.open(altered[10:])  # chunks 1-2 good, 3 altered, 4-5 good: one read
    assert got == b""  # nothing of that read, not even the good chunks before the bad one
    # The stream stays failed: later reads release nothing, whatever they hold.
    with pytest.raises(StreamError, match="failed authentication"):
        client.open(wire[len(wire) - tail :])


@pytest.mark.parametrize("name", ["aes-128-gcm", "2022-blake3-aes-128-gcm"])
def test_a_failed_tag_in_a_chunk_completed_from_the_last_read(name: str) -> None:
    client, wire = _response(name, PIECES)
    altered = bytearray(wire)
    altered[-3] ^= 1  # inside the last chunk's tag
    got = client.open(altered[:-10])  # every chunk but the last released
    assert got == b"".join(PIECES[:-1])
    with pytest.raises(StreamError):
        client.open(altered[-10:])


def test_codecs_work_with_an_aead_that_returns_new_bytes(monkeypatch) -> None:
    """Older cryptography releases have no encrypt_into/decrypt_into: the codec copies."""
    from transports.shadowsocks import codec

    class Plain:  # an AEAD with only encrypt and decrypt
        def __init__(self, key: bytes, aes: bool) -> None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

            self._aead = (AESGCM if aes else ChaCha20Poly1305)(key)
            self.encrypt, self.decrypt = self._aead.encrypt, self._aead.decrypt

    def make(method, key):
        return Plain(key, method.aes)

    monkeypatch.setattr(
        codec._Aead,
        "__init__",
        lambda self, method, key: _plain_init(self, make(method, key)),
    )
    for name in ("chacha20-ietf-poly1305", "2022-blake3-aes-256-gcm"):
        client, server = pair(name)
        big = bytes(range(256)) * 300
        assert server.open(client.request(b"x") + client.seal(big)) == b"x" + big
        wire = server.seal(big)
        assert client.open(wire[:999]) + client.open(wire[999:]) == big
        altered = bytearray(server.seal(b"abc"))
        altered[-1] ^= 1
        with pytest.raises(StreamError):
            client.open(altered)


def _plain_init(aead, inner) -> None:
    aead._aead = inner
    aead._counter = 0
    aead._encrypt_into = getattr(inner, "encrypt_into", None)
    aead._decrypt_into = getattr(inner, "decrypt_into", None)
    assert aead._encrypt_into is None and aead._decrypt_into is None


def test_sealed_buffers_are_the_callers() -> None:
    client, server = pair("aes-128-gcm")
    first = client.request(b"x")
    one = client.seal(b"a" * 100)
    kept = bytes(one)
    two = client.seal(b"b" * 100)
    assert one == kept and one is not two
    assert server.open(first + one + two) == b"x" + b"a" * 100 + b"b" * 100
