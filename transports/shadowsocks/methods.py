"""Shadowsocks ciphers and keys: which methods exist, how a password or a pre-shared key
becomes the key, and how each connection's session key is derived from it and a salt.

    AEAD (2017, SIP004)       key = EVP_BytesToKey(MD5, password)
                              session key = HKDF-SHA1(key, salt, info="ss-subkey")
    2022 (SIP022)             key = base64 pre-shared key of exactly the method's size
                              session key = BLAKE3-derive_key("shadowsocks 2022 session
                                            subkey", key + salt)

Every cipher comes from `cryptography`; BLAKE3 from the `blake3` binding (imported only
when a 2022 method is used, so the AEAD methods work without it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

__all__ = [
    "METHODS",
    "Method",
    "MethodError",
    "identity_headers",
    "method_named",
    "parse_psks",
    "password_key",
    "session_key",
]

TAG = 16  # every method's AEAD tag
NONCE = 12


class MethodError(ValueError):
    """A password or key does not fit its method; the message never quotes it."""


@dataclass(frozen=True)
class Method:
    name: str
    key_size: int  # = salt size for every method here
    edition: int  # 2017 (AEAD) or 2022
    aes: bool

    @property
    def aead(self) -> Callable[[bytes], Any]:
        """The AEAD's class (cryptography's AESGCM or ChaCha20Poly1305), loaded on first use:
        reading a link needs no cipher."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

        return AESGCM if self.aes else ChaCha20Poly1305

    @property
    def salt_size(self) -> int:
        return self.key_size

    @property
    def max_payload(self) -> int:
        # SIP004 caps a chunk at 0x3FFF; SIP022 lifts that to 0xFFFF.
        return 0xFFFF if self.edition == 2022 else 0x3FFF


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("chacha20-ietf-poly1305", 32, 2017, aes=False),
        Method("aes-256-gcm", 32, 2017, aes=True),
        Method("aes-192-gcm", 24, 2017, aes=True),
        Method("aes-128-gcm", 16, 2017, aes=True),
        Method("2022-blake3-aes-128-gcm", 16, 2022, aes=True),
        Method("2022-blake3-aes-256-gcm", 32, 2022, aes=True),
        Method("2022-blake3-chacha20-poly1305", 32, 2022, aes=False),
    )
}
# Names clients write for the same cipher.
_ALIASES = {"chacha20-poly1305": "chacha20-ietf-poly1305"}
# Methods people still have in old links, with why detour does not speak them.
_REFUSED = {
    "xchacha20-ietf-poly1305": "XChaCha20 is not in the cryptography library detour uses",
    "none": "it does not encrypt",
    "plain": "it does not encrypt",
}


def method_named(name: str) -> Method:
    """The method for a name as links write it; MethodError names what is valid."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in METHODS:
        return METHODS[key]
    known = ", ".join(METHODS)
    if key in _REFUSED:
        raise MethodError(f"cipher {key!r} is not supported: {_REFUSED[key]} (supported: {known})")
    if key.endswith(("-cfb", "-ctr", "-ofb")) or key in (
        "rc4-md5",
        "chacha20",
        "chacha20-ietf",
        "salsa20",
        "bf-cfb",
        "table",
    ):
        raise MethodError(
            f"cipher {key!r} is a stream cipher without authentication, which censors detect "
            f"and servers no longer offer; ask for an AEAD or 2022 key (supported: {known})"
        )
    shown = key if len(key) <= 40 and key.isprintable() else key[:37] + "..."
    raise MethodError(f"unknown cipher {shown!r} (supported: {known})")


def password_key(method: Method, password: str) -> bytes:
    """An AEAD method's key from a password (OpenSSL's EVP_BytesToKey with MD5, one round,
    as every Shadowsocks implementation does)."""
    data = password.encode()
    key = b""
    last = b""
    while len(key) < method.key_size:
        last = hashlib.md5(last + data, usedforsecurity=False).digest()
        key += last
    return key[: method.key_size]


def parse_psks(method: Method, password: str) -> tuple[bytes, ...]:
    """A 2022 method's keys: one base64 PSK, or `iPSK:...:uPSK` for servers behind identity
    headers (SIP022 extension 2022-2). Each must be exactly the method's key size."""
    parts = password.split(":")
    if len(parts) > 1 and not method.aes:
        raise MethodError(
            f"{method.name}: several keys joined by ':' (identity headers) work only with the "
            "AES methods"
        )
    keys = []
    for position, part in enumerate(parts, start=1):
        which = "the key" if len(parts) == 1 else f"key {position} of {len(parts)}"
        try:
            key = base64.b64decode(part.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MethodError(
                f"{method.name}: {which} is not base64 (a 2022 key is `openssl rand -base64 "
                f"{method.key_size}`, not a password)"
            ) from None
        if len(key) != method.key_size:
            raise MethodError(
                f"{method.name}: {which} is {len(key)} bytes; this method needs "
                f"{method.key_size} (base64 of {method.key_size} random bytes)"
            )
        keys.append(key)
    return tuple(keys)


def _derive_key(context: str, material: bytes, size: int) -> bytes:
    try:
        from blake3 import blake3
    except ImportError:  # pragma: no cover - a dependency; said clearly where it is missing
        raise MethodError("the 2022 ciphers need the blake3 package (pip install blake3)") from None
    return blake3(material, derive_key_context=context).digest(size)


def session_key(method: Method, key: bytes, salt: bytes) -> bytes:
    """One stream's key from the key and that stream's salt."""
    if method.edition == 2022:
        return _derive_key("shadowsocks 2022 session subkey", key + salt, method.key_size)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA1(), length=method.key_size, salt=salt, info=b"ss-subkey"
    ).derive(key)


def identity_headers(keys: tuple[bytes, ...], salt: bytes) -> bytes:
    """The identity headers a request carries after its salt, one per identity key (all keys
    but the last, which is the user's): AES-encrypted, under a key derived from the identity
    key and the salt, the first 16 bytes of the BLAKE3 hash of the next key."""
    from blake3 import blake3
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    headers = []
    for current, following in pairwise(keys):
        subkey = _derive_key("shadowsocks 2022 identity subkey", current + salt, len(current))
        plain = blake3(following).digest(16)
        encryptor = Cipher(algorithms.AES(subkey), modes.ECB()).encryptor()  # one block
        headers.append(encryptor.update(plain) + encryptor.finalize())
    return b"".join(headers)
