"""MTProto proxy secrets and the links that hand them to Telegram's apps. Sans-IO.

A proxy secret is 16 random bytes; what is written before and after them says how a client
must talk to the proxy (core.telegram.org/mtproto/mtproto-transports, Telegram's MTProxy):

    form                          bytes                         the client sends
    plain    <32 hex>             key (16)                      an obfuscated2 init made with
                                                                the key, any framing
    dd       dd<32 hex>           0xdd, key (16)                the same, padded intermediate
                                                                framing only (random padding
                                                                hides the packets' lengths)
    ee       ee<32 hex><domain>   0xee, key (16), domain        a fake TLS 1.3 ClientHello to
                                  (ASCII, 1-253 bytes)          `domain` signed with the key,
                                                                then the obfuscated2 stream in
                                                                TLS application-data records
                                                                (faketls.py)

Telegram writes a secret in hex (`ee` + hex, the domain hex-encoded too) or as base64url of
the same bytes (padding optional); both are read here. A link carries the hex form:

    tg://proxy?server=HOST&port=PORT&secret=SECRET
    https://t.me/proxy?server=HOST&port=PORT&secret=SECRET
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

__all__ = [
    "HIDDEN_SECRET",
    "KEY_LEN",
    "ProxyLink",
    "ProxySecret",
    "SecretMode",
    "generate_secret",
    "parse_secret",
    "proxy_link",
]

KEY_LEN = 16
_MAX_DOMAIN = 253
_HEX = re.compile(r"[0-9a-fA-F]*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class SecretMode(enum.Enum):
    PLAIN = "plain"  # obfuscated2, any framing
    PADDED = "dd"  # obfuscated2, padded intermediate only
    FAKE_TLS = "ee"  # obfuscated2 inside a fake TLS session to `domain`


@dataclass(frozen=True)
class ProxySecret:
    key: bytes  # the 16 bytes the ciphers and the ClientHello's HMAC use
    mode: SecretMode
    domain: str | None = None  # FAKE_TLS only: the site whose TLS the client imitates

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise ValueError(f"a proxy secret's key is {KEY_LEN} bytes, not {len(self.key)}")
        if (self.mode is SecretMode.FAKE_TLS) != (self.domain is not None):
            raise ValueError("a domain goes with an ee (fake-TLS) secret, and only with it")
        if self.domain is not None:
            _check_domain(self.domain)

    @property
    def wire(self) -> bytes:
        """The secret's bytes as Telegram writes them (what hex() and base64url() encode)."""
        if self.mode is SecretMode.PLAIN:
            return self.key
        if self.mode is SecretMode.PADDED:
            return b"\xdd" + self.key
        assert self.domain is not None
        return b"\xee" + self.key + self.domain.encode("ascii")

    def hex(self) -> str:
        return self.wire.hex()

    def base64url(self) -> str:
        return base64.urlsafe_b64encode(self.wire).rstrip(b"=").decode("ascii")

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:  # never the key itself (logs, tracebacks)
        domain = f", domain={self.domain!r}" if self.domain else ""
        return f"ProxySecret(mode={self.mode.value}{domain})"


def _check_domain(domain: str) -> None:
    if not domain or len(domain) > _MAX_DOMAIN:
        raise ValueError(f"an ee secret's domain has 1 to {_MAX_DOMAIN} characters")
    if not domain.isascii() or not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        raise ValueError(f"{domain!r} is not a host name (letters, digits, '-' and '.')")


def parse_secret(text: str) -> ProxySecret:
    """A secret in any of the forms above. Raises ValueError saying which forms exist."""
    text = text.strip()
    if not text:
        raise ValueError("an empty secret")
    problem = None
    # Hex first; base64url text may happen to consist of hex digits only.
    for decode in (_from_hex, _from_base64url):
        raw = decode(text)
        if raw is None:
            continue
        try:
            return _from_bytes(raw)
        except ValueError as exc:
            problem = problem or str(exc)  # what the first reading that decoded found
    raise ValueError(problem or "a secret is hex or base64url")


def _from_bytes(raw: bytes) -> ProxySecret:
    if len(raw) == KEY_LEN:
        return ProxySecret(raw, SecretMode.PLAIN)
    if raw[:1] == b"\xdd" and len(raw) == KEY_LEN + 1:
        return ProxySecret(raw[1:], SecretMode.PADDED)
    if raw[:1] == b"\xee" and len(raw) > KEY_LEN + 1:
        try:
            domain = raw[KEY_LEN + 1 :].decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("an ee secret's domain is not ASCII") from None
        return ProxySecret(raw[1 : KEY_LEN + 1], SecretMode.FAKE_TLS, domain)
    raise ValueError(
        f"{len(raw)} bytes is no proxy secret: 32 hex digits (plain), dd + 32 hex digits "
        "(padded), ee + 32 hex digits + the domain in hex (fake TLS), or the same bytes in "
        "base64url"
    )


def _from_hex(text: str) -> bytes | None:
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    return None


def _from_base64url(text: str) -> bytes | None:
    if not re.fullmatch(r"[A-Za-z0-9_\-+/]+=*", text):
        return None
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        return None
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def generate_secret(
    mode: SecretMode = SecretMode.PADDED,
    domain: str | None = None,
    *,
    urandom: Callable[[int], bytes] = os.urandom,
) -> ProxySecret:
    """A new secret of `mode` (with `domain` for FAKE_TLS)."""
    return ProxySecret(urandom(KEY_LEN), mode, domain)


def proxy_link(host: str, port: int, secret: ProxySecret | str, *, web: bool = False) -> str:
    """Telegram's link that adds this MTProto proxy: tg://proxy?... or, with `web`, the
    https://t.me/proxy?... form that opens in a browser first."""
    params = {"server": host.strip("[]"), "port": str(port), "secret": str(secret)}
    query = urlencode(params, quote_via=quote)
    return ("https://t.me/proxy?" if web else "tg://proxy?") + query


HIDDEN_SECRET = "***"


@dataclass(frozen=True)
class ProxyLink:
    """One user's way into the endpoint, as Telegram's apps take it."""

    user: str
    host: str  # what the apps connect to
    port: int
    secret: ProxySecret

    @property
    def mode(self) -> str:
        return self.secret.mode.value

    def link(self, *, web: bool = False, reveal: bool = False) -> str:
        """tg://proxy?... (https://t.me/proxy?... with `web`); unless `reveal`, the secret is
        replaced by *** -- that form is for showing, not for using."""
        if reveal:
            return proxy_link(self.host, self.port, self.secret, web=web)
        return proxy_link(self.host, self.port, "SECRET", web=web).replace(
            "secret=SECRET", "secret=" + HIDDEN_SECRET
        )
