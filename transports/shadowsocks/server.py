"""A Shadowsocks server as a client knows it: where it is, its cipher, its password or key,
and Outline's prefix. What an `ss://` link or an Outline access key holds, validated; the
key is derived once here, so a dial does no key stretching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import Endpoint
from .key import ShadowsocksKey
from .methods import Method, MethodError, method_named, parse_psks, password_key

__all__ = ["MIN_RANDOM_SALT", "ShadowsocksServer", "shadowsocks_server"]

# A prefix takes the place of salt bytes; this many must stay random, or session keys would
# repeat across connections (64 bits: a repeat is unlikely in 2^32 connections).
MIN_RANDOM_SALT = 8


@dataclass(frozen=True)
class ShadowsocksServer:
    address: Endpoint
    method: Method
    password: str = field(repr=False)  # the password, or the base64 2022 key(s): a secret
    prefix: bytes = b""
    name: str = ""  # the link's #name, for people
    key: ShadowsocksKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        method = self.method
        if method.edition == 2022:
            keys = parse_psks(method, self.password)
        else:
            if not self.password:
                raise MethodError(f"{method.name}: the password is empty")
            keys = (password_key(method, self.password),)
        if len(self.prefix) > method.salt_size - MIN_RANDOM_SALT:
            raise MethodError(
                f"the prefix is {len(self.prefix)} bytes; with {method.name} at most "
                f"{method.salt_size - MIN_RANDOM_SALT} fit (each connection's salt must keep "
                f"{MIN_RANDOM_SALT} random bytes)"
            )
        object.__setattr__(self, "key", ShadowsocksKey(method, keys, self.prefix))

    def __repr__(self) -> str:
        return f"ShadowsocksServer({self.method.name} ***@{self.address})"

    __str__ = __repr__


def shadowsocks_server(
    host: str, port: int, method: str, password: str, prefix: bytes = b"", name: str = ""
) -> ShadowsocksServer:
    """A validated server; ValueError (MethodError) names what is wrong, never the secret."""
    return ShadowsocksServer(Endpoint(host, port), method_named(method), password, prefix, name)
