"""The fake-TLS ClientHello check against published test vectors of a second, independent
MTProto proxy: mtg's (github.com/9seconds/mtg, mtglib/internal/faketls/testdata, the
`client-hello-ok-*` and `client-hello-bad-*` snapshots with the secret its tests use).

Each snapshot is a ClientHello handshake message a real client sent to mtg for the secret
below, with the time, random and session id mtg read from it. The record around it is what
the client sent (a handshake record of version 0x0301); the proof is HMAC-SHA256 with the
secret's key over that record with the random zeroed, its last four bytes XORed with the
client's time (little-endian). detour must accept the good ones with the same time and
session id, and refuse the bad one (bytes changed after signing)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from transports.mtproto import faketls
from transports.mtproto.secret import parse_secret

# mtg's test secret: ee, the 16-byte key, then the domain (storage.googleapis.com).
SECRET = "ee367a189aee18fa31c190054efd4a8e9573746f726167652e676f6f676c65617069732e636f6d"
KEY = bytes.fromhex(SECRET[2:34])

# (time, random, session id, the whole handshake message), as the snapshots give them.
GOOD = [
    (
        1617181365,
        "XvCPc3aAbHbhRLv0kUmy6BfPZOGvsused5/HNsKXEPs=",
        "St2BZ2uHMFn3B2trD1jfdtpjoJOOg6JBeLhFcyCMCq4=",
        "AQAB/AMDXvCPc3aAbHbhRLv0kUmy6BfPZOGvsused5/HNsKXEPsgSt2BZ2uHMFn3B2trD1jfdtpjoJOOg6JBeLhFcyCM"
        "Cq4ANBMDEwETAsAswCvAJMAjwArACcypwDDAL8AowCfAFMATzKgAnQCcAD0APAA1AC/ACMASAAoBAAF//wEAAQAAAAAb"
        "ABkAABZzdG9yYWdlLmdvb2dsZWFwaXMuY29tABcAAAANABgAFgQDCAQEAQUDAgMIBQgFBQEIBgYBAgEABQAFAQAAAAAz"
        "dAAAABIAAAAQADAALgJoMgVoMi0xNgVoMi0xNQVoMi0xNAhzcGR5LzMuMQZzcGR5LzMIaHR0cC8xLjEACwACAQAAMwAm"
        "ACQAHQAgB/7oLx9JElIALsLJS91H2QNyU1H0osKwIUelVndsLyIALQACAQEAKwAJCAMEAwMDAgMBAAoACgAIAB0AFwAY"
        "ABkAFQChAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ),
    (
        1617181352,
        "oYEu33jl+zQbUKMtQbV1OHB0gXIM2y2aq9iY0QX12os=",
        "FGqA3ZFYrSlj//xl7lammNn64K9/MK2mQ3HJUGvP+8g=",
        "AQAB/AMDoYEu33jl+zQbUKMtQbV1OHB0gXIM2y2aq9iY0QX12osgFGqA3ZFYrSlj//xl7lammNn64K9/MK2mQ3HJUGvP"
        "+8gANBMDEwETAsAswCvAJMAjwArACcypwDDAL8AowCfAFMATzKgAnQCcAD0APAA1AC/ACMASAAoBAAF//wEAAQAAAAAb"
        "ABkAABZzdG9yYWdlLmdvb2dsZWFwaXMuY29tABcAAAANABgAFgQDCAQEAQUDAgMIBQgFBQEIBgYBAgEABQAFAQAAAAAz"
        "dAAAABIAAAAQADAALgJoMgVoMi0xNgVoMi0xNQVoMi0xNAhzcGR5LzMuMQZzcGR5LzMIaHR0cC8xLjEACwACAQAAMwAm"
        "ACQAHQAga6CocpFP8Qd4YCFR9pkaCr97po2ALj0P5nI9Nnb3UWMALQACAQEAKwAJCAMEAwMDAgMBAAoACgAIAB0AFwAY"
        "ABkAFQChAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ),
]
# client-hello-bad-fa2e46cdb33e2a1b: the first good one with a byte of its session id changed.
BAD = (
    "AQAB/AMDXvCPc3aAbHbhRLv0kUmy6BfPZOGvsused5/HNsKXEPsgSt2BZ2uHMFn3B2trD1jfdtpjoJOOg6JBeLhFcyCA"
    "Cq4ANBMDEwETAsAswCvAJMAjwArACcypwDDAL8AowCfAFMATzKgAnQCcAD0APAA1AC/ACMASAAoBAAF//wEAAQAAAAAb"
    "ABkAABZzdG9yYWdlLmdvb2dsZWFwaXMuY29tABcAAAANABgAFgQDCAQEAQUDAgMIBQgFBQEIBgYBAgEABQAFANAAAAAz"
    "dAAAABIAAAAQADAALgJoMgVoMi0xNgVoMi0xNQVoMi0xNAhzcGR5LzMuMQZzcGR5LzMIaHR0cC8xLjEACwACAQAAMwAm"
    "ACQAHQAgB/7oLx9JElIALsLJS91H2QNyU1H0osKwIUelVndsLyIALQACAQEAKwAJCAMEAwMDAgMBAAoACgAIAB0AFwAY"
    "ABkAFQChAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def record(full_b64: str) -> bytes:
    """The handshake message in the record the client sent it in."""
    full = base64.b64decode(full_b64)
    return b"\x16\x03\x01" + struct.pack(">H", len(full)) + full


def test_the_secret_parses_as_mtgs() -> None:
    secret = parse_secret(SECRET)
    assert secret.key == KEY
    assert secret.domain == "storage.googleapis.com"


@pytest.mark.parametrize("vector", GOOD, ids=["19dfe38384b9884b", "48f8a72a56f3174a"])
def test_published_hellos_are_accepted(vector: tuple[int, str, str, str]) -> None:
    when, random, session, full = vector
    hello = record(full)
    assert len(hello) == 517
    parsed = faketls.check_client_hello(hello, KEY, now=when, skew=1)
    assert parsed.timestamp == when
    assert parsed.random == base64.b64decode(random)
    assert parsed.session_id == base64.b64decode(session)
    # The formula itself, computed here apart from detour's code.
    digest = hmac.digest(KEY, hello[:11] + bytes(32) + hello[43:], hashlib.sha256)
    mixed = bytes(a ^ b for a, b in zip(digest, hello[11:43], strict=True))
    assert mixed[:28] == bytes(28) and struct.unpack("<I", mixed[28:]) == (when,)


@pytest.mark.parametrize("vector", GOOD, ids=["19dfe38384b9884b", "48f8a72a56f3174a"])
def test_published_hellos_are_refused_out_of_time_or_with_another_key(
    vector: tuple[int, str, str, str],
) -> None:
    when, _, _, full = vector
    with pytest.raises(faketls.HelloError, match="clock"):
        faketls.check_client_hello(record(full), KEY, now=when + 1201, skew=1200)
    with pytest.raises(faketls.HelloError, match="not signed"):
        faketls.check_client_hello(record(full), bytes(16), now=when, skew=1)


def test_the_published_bad_hello_is_refused() -> None:
    with pytest.raises(faketls.HelloError, match="not signed"):
        faketls.check_client_hello(record(BAD), KEY, now=GOOD[0][0], skew=1)


def test_a_published_hello_is_refused_when_replayed() -> None:
    cache = faketls.ReplayCache(capacity=16, window=2400)
    when, _, _, full = GOOD[0]
    faketls.check_client_hello(record(full), KEY, now=when, skew=1, replays=cache)
    with pytest.raises(faketls.HelloError, match="replayed"):
        faketls.check_client_hello(record(full), KEY, now=when, skew=1, replays=cache)
