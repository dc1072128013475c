"""What an app's first bytes say, for the layers that carry its MTProto stream on (`tgws`,
`mtproxy:`): the framing it speaks, and its ciphers when it obfuscates. Each layer names the
transports it does not carry, with its own reasons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .obfuscated2 import INIT_LEN, InitError, Obfuscation, Tag, TransportKind, accept, classify

__all__ = ["CLEAR_TAGS", "ClientStart", "StartRefused", "read_start"]

# Framings sent in the clear: their tag, and how many first bytes announce it.
CLEAR_TAGS = {
    TransportKind.ABRIDGED: (Tag.ABRIDGED, 1),
    TransportKind.INTERMEDIATE: (Tag.INTERMEDIATE, 4),
    TransportKind.PADDED: (Tag.PADDED, 4),
}


class StartRefused(ValueError):
    """The app's first bytes are nothing the layer carries (the message says why)."""


@dataclass(frozen=True)
class ClientStart:
    tag: Tag  # the app's framing
    size: int  # how many first bytes announced it: the init (64) or the clear marker
    obfuscation: Obfuscation | None  # the app's ciphers; None in the clear


def read_start(
    first: bytes | bytearray, uncarried: Mapping[TransportKind, str]
) -> ClientStart | None:
    """The app's start from its first bytes; None until there are enough of them. Raises
    StartRefused for a transport in `uncarried` (kind -> what it is, for the message) or an
    init that is no MTProto."""
    kind = classify(bytes(first[:8]))
    if kind is None:
        return None
    if kind in uncarried:
        raise StartRefused(f"the client speaks {uncarried[kind]}")
    if kind is TransportKind.OBFUSCATED2:
        if len(first) < INIT_LEN:
            return None
        try:
            header, obfuscation = accept(bytes(first[:INIT_LEN]))
        except InitError as exc:
            raise StartRefused(f"the client's first bytes are no MTProto: {exc}") from None
        return ClientStart(header.tag, INIT_LEN, obfuscation)
    tag, marker = CLEAR_TAGS[kind]
    return ClientStart(tag, marker, None)
