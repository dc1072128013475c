"""A Shadowsocks method with its key material, as a server's link gives it: light enough
to build when a link is read (no cipher is loaded until a stream uses the key)."""

from __future__ import annotations

from dataclasses import dataclass

from .methods import Method

__all__ = ["ShadowsocksKey"]


@dataclass(frozen=True)
class ShadowsocksKey:
    """A method and its key material: for 2017 the key derived from the password, for 2022
    the pre-shared keys (identity keys first, the user's last). `prefix` replaces the
    first bytes of every salt we send (Outline's disguise)."""

    method: Method
    keys: tuple[bytes, ...]
    prefix: bytes = b""

    def __post_init__(self) -> None:
        if len(self.prefix) > self.method.salt_size:
            raise ValueError("the prefix is longer than the salt")

    @property
    def key(self) -> bytes:
        """The key the streams are encrypted with (the user's)."""
        return self.keys[-1]

    def __repr__(self) -> str:
        return f"ShadowsocksKey({self.method.name}, ***)"

    __str__ = __repr__
