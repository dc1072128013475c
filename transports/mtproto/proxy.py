"""What an MTProto proxy decides about a client, sans-IO: which user's secret opens its
obfuscated2 init, which DC it asks for and at what address, and whether the packets it then
sends keep within the limits (helper/proxy/mtproto.py does the I/O).

    client --obfuscated2 (keys: sha256(init key + secret))--> proxy --obfuscated2 (its own
    init, no secret)--> DC, through the router (direct, tgws, ...)

The proxy decrypts what the client sends with the client's keys and encrypts it again with
its own toward the DC, and the other way round: the DC never sees the client's init, and
the bytes on the two connections have nothing in common an observer could match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .dcs import DataCentre, DcTable
from .faketls import ReplayCache
from .framing import MAX_PACKET, FramingError
from .obfuscated2 import INIT_LEN, Header, InitError, Obfuscation, Tag, accept
from .secret import ProxySecret, SecretMode

__all__ = ["Identified", "LengthGuard", "dc_address", "identify"]

Identified = tuple[str, ProxySecret, Header, Obfuscation]
_KEY_MATERIAL = slice(8, 56)  # the init's keys and IVs: what a replay repeats


def identify(
    init: bytes,
    secrets: Sequence[tuple[str, ProxySecret]],
    *,
    replays: ReplayCache | None = None,
    now: float = 0.0,
) -> Identified:
    """The user whose secret opens `init` (64 bytes), what the init says, and the client's
    ciphers (`receive` at offset 64, after the init). A `dd` secret opens only an init for
    padded intermediate framing. Raises InitError: junk, a wrong secret, a replayed init."""
    if len(init) != INIT_LEN:
        raise InitError(f"an init is {INIT_LEN} bytes, not {len(init)}")
    for name, secret in secrets:
        try:
            header, obfuscation = accept(init, secret=secret.key)
        except InitError:
            continue
        if secret.mode is SecretMode.PADDED and header.tag is not Tag.PADDED:
            continue
        if replays is not None and not replays.add(bytes(init[_KEY_MATERIAL]), now):
            raise InitError("a replayed init")
        return name, secret, header, obfuscation
    raise InitError("no secret opens this init (a wrong secret, or not an MTProto client)")


def dc_address(
    header: Header, table: DcTable, overrides: Mapping[int, str] | None = None
) -> str | None:
    """The address (`HOST` or `HOST:PORT`) of the DC a client's init names, or None when
    no DC has that number. A media DC without media addresses of its own is reached at its
    main ones (they serve files too)."""
    if header.dc <= 0:
        return None
    if overrides and header.dc in overrides:
        return overrides[header.dc]
    for media in dict.fromkeys((header.media, False)):
        found = table.addresses_of(DataCentre(header.dc, media=media, test=header.test))
        if found:
            return found[0]
    return None


class LengthGuard:
    """Follows the packet lengths of a plaintext MTProto stream fed in pieces, without
    keeping its bytes; raises FramingError at the first length no packet can have (empty,
    or beyond `limit`). A proxy stops a client there instead of passing it to the DC."""

    def __init__(self, tag: Tag, limit: int = MAX_PACKET) -> None:
        self.tag = tag
        self.limit = limit
        self._remaining = 0  # bytes of the current packet still to come
        self._head = bytearray()  # a length field that is still incomplete

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                continue
            head = self._head
            want = self._head_size(head, data[pos])
            take = min(want - len(head), end - pos)
            head += data[pos : pos + take]
            pos += take
            want = self._head_size(head, head[0])
            if len(head) < want:
                continue
            self._remaining = self._length(bytes(head))
            head.clear()

    def _head_size(self, head: bytearray, first: int) -> int:
        if self.tag is Tag.ABRIDGED:
            return 4 if (head[0] if head else first) & 0x7F == 0x7F else 1
        return 4

    def _length(self, head: bytes) -> int:
        if self.tag is Tag.ABRIDGED:
            words = head[0] & 0x7F
            length = (int.from_bytes(head[1:4], "little") if words == 0x7F else words) * 4
        else:
            length = int.from_bytes(head, "little") & 0x7FFFFFFF
        if length == 0:
            raise FramingError("an empty packet")
        if length > self.limit:
            raise FramingError(f"a packet of {length} bytes (at most {self.limit})")
        return length
