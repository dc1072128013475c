"""Access keys: everything a detour needs to use one relay, in one string a user pastes into a
route (`front:dtr1:...`) or scans as a QR code.

    dtr1:BASE64URL(zlib(JSON))   JSON: {"v": 1, "a": front address HOST:PORT, "f": front
                                  name (TLS SNI), "h": relay host (HTTP Host), "p": path,
                                  "pin": SHA-256 of the relay's certificate, "n": client name,
                                  "t": access token secret, "c": client certificate (DER),
                                  "k": client private key (DER)}

The whole string is a secret (it holds the client's private key): it is redacted wherever a
chain is shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any

from ..base import Endpoint

__all__ = [
    "PREFIX",
    "AccessKey",
    "AccessKeyError",
    "TokenCheck",
    "access_token",
    "check_access_token",
    "read_access_token",
]

PREFIX = "dtr1:"
MAX_KEY = 16 * 1024
TOKEN_WINDOW = 300  # seconds a token is valid either side of the relay's clock


class AccessKeyError(ValueError):
    """Not an access key; the message says what is wrong, never the key."""


@dataclass(frozen=True)
class AccessKey:
    address: Endpoint  # where to connect: the CDN front (or the relay itself)
    front: str  # the TLS server name on the wire: what the censor sees
    host: str  # the HTTP Host inside: which hidden relay the CDN forwards to
    path: str  # the relay's secret WebSocket path
    pin: str  # hex SHA-256 of the relay's certificate (DER)
    name: str  # the client's name at the relay
    token: bytes = b""  # secret for the per-request access token
    cert: bytes = b""  # client certificate, DER
    key: bytes = b""  # client private key, PKCS#8 DER

    def __repr__(self) -> str:
        return f"AccessKey(front={self.front!r}, host={self.host!r}, name={self.name!r})"

    def encode(self) -> str:
        data = {
            "v": 1,
            "a": str(self.address),
            "f": self.front,
            "h": self.host,
            "p": self.path,
            "pin": self.pin,
            "n": self.name,
            "t": _b64(self.token),
            "c": _b64(self.cert),
            "k": _b64(self.key),
        }
        packed = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 9)
        return PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> AccessKey:
        text = "".join(text.split())  # tolerate line breaks from copy and paste
        if not text.startswith(PREFIX):
            raise AccessKeyError(f"an access key starts with {PREFIX!r}")
        body = text[len(PREFIX) :]
        if len(body) > MAX_KEY:
            raise AccessKeyError("the access key is too long")
        try:
            packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            raw = zlib.decompressobj().decompress(packed, MAX_KEY)
            data = json.loads(raw)
        except (binascii.Error, ValueError, zlib.error, RecursionError):
            raise AccessKeyError("the access key is damaged (was it cut short?)") from None
        if not isinstance(data, dict) or data.get("v") != 1:
            raise AccessKeyError("not an access key this version of detour understands")
        try:
            key = cls(
                address=Endpoint.parse(_text(data, "a"), 443),
                front=_text(data, "f"),
                host=_text(data, "h"),
                path=_text(data, "p"),
                pin=_text(data, "pin").lower(),
                name=_text(data, "n"),
                token=_unb64(data, "t"),
                cert=_unb64(data, "c"),
                key=_unb64(data, "k"),
            )
        except (KeyError, ValueError, TypeError, binascii.Error):
            raise AccessKeyError("the access key is incomplete or damaged") from None
        if len(key.pin) != 64 or any(c not in "0123456789abcdef" for c in key.pin):
            raise AccessKeyError("the access key's certificate pin is not a SHA-256")
        if not key.path.startswith("/") or not key.token or not key.cert or not key.key:
            raise AccessKeyError("the access key is incomplete")
        return key

    def with_overrides(self, **changes: Any) -> AccessKey:
        return replace(self, **changes)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(data: dict[str, Any], name: str) -> bytes:
    text = _text(data, name)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _text(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise ValueError(name)
    return value


def _mac(token: bytes, name: str, stamp: int, path: str, nonce: str = "") -> str:
    text = f"{name}.{stamp}.{nonce}.{path}" if nonce else f"{name}.{stamp}.{path}"
    digest = hmac.new(token, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def access_token(key: AccessKey, now: float | None = None, *, nonce: bool = True) -> str:
    """The value a tunnel request carries (in a cookie): the client's name, a time stamp, a
    nonce and a MAC over them and the path. It only decides whether the relay answers as a
    relay or as its ordinary website; the inner TLS is what authenticates. The nonce makes
    each token unique, so the relay can refuse any token it has seen (a replay) without
    refusing a second tunnel opened in the same second. `nonce=False`: the form relays from
    before the nonce read (NAME.STAMP.MAC)."""
    stamp = int(time.time() if now is None else now)
    if not nonce:
        return f"{key.name}.{stamp}.{_mac(key.token, key.name, stamp, key.path)}"
    extra = "n" + secrets.token_hex(8)  # a letter first: never read as a stamp
    return f"{key.name}.{stamp}.{extra}.{_mac(key.token, key.name, stamp, key.path, extra)}"


def _is_stamp(text: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts "²" and other scripts' digits.
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def _is_nonce(text: str) -> bool:
    return len(text) == 17 and text[0] == "n" and all(c in "0123456789abcdef" for c in text[1:])


@dataclass(frozen=True)
class TokenCheck:
    """A valid token: whose it is, when it stops being valid (`expires`, Unix time), and
    `ident`, the same for a replay of it and different for every other token."""

    name: str
    expires: int
    ident: bytes


def read_access_token(
    value: str, tokens: dict[str, bytes], path: str, now: float | None = None
) -> TokenCheck | None:
    """The TokenCheck of `value` if it is a fresh, valid token for one of `tokens`, else None.

    Two forms are valid: `NAME.STAMP.NONCE.MAC` (what access_token writes) and, from
    clients before the nonce, `NAME.STAMP.MAC`. A name may hold dots; a nonce starts with a
    letter and a stamp is all digits, so the two never read alike."""
    head, sep, rest = value.rpartition(".")
    nonce = ""
    before, sep_nonce, last = head.rpartition(".")
    if sep_nonce and _is_nonce(last):
        nonce, head = last, before
    name, sep2, stamp_text = head.rpartition(".")
    if not (sep and sep2 and _is_stamp(stamp_text)) or name not in tokens:
        return None
    stamp = int(stamp_text)
    if abs((time.time() if now is None else now) - stamp) > TOKEN_WINDOW:
        return None
    expected = _mac(tokens[name], name, stamp, path, nonce).encode()
    given = rest.encode() if rest.isascii() else b""
    if not hmac.compare_digest(expected, given):
        return None
    return TokenCheck(name, stamp + TOKEN_WINDOW, hashlib.sha256(expected).digest()[:16])


def check_access_token(
    value: str, tokens: dict[str, bytes], path: str, now: float | None = None
) -> str | None:
    """The client's name if `value` is a fresh, valid token for one of `tokens`, else None."""
    check = read_access_token(value, tokens, path, now)
    return check.name if check else None
