"""transports/mtproto/start.py: an app's first bytes as `tgws` and `mtproxy:` read them."""

from __future__ import annotations

import pytest

from transports.mtproto.obfuscated2 import Tag, TransportKind, initiate
from transports.mtproto.start import StartRefused, read_start

UNCARRIED = {TransportKind.FULL: "the full transport", TransportKind.TLS: "TLS"}


@pytest.mark.parametrize(
    ("first", "tag", "size"),
    [
        (b"\xef", Tag.ABRIDGED, 1),
        (b"\xee\xee\xee\xee", Tag.INTERMEDIATE, 4),
        (b"\xdd\xdd\xdd\xdd", Tag.PADDED, 4),
    ],
)
def test_framings_in_the_clear(first: bytes, tag: Tag, size: int) -> None:
    start = read_start(first + b"rest", UNCARRIED)
    assert start is not None
    assert (start.tag, start.size, start.obfuscation) == (tag, size, None)


def test_an_obfuscated_init_gives_the_apps_framing_and_ciphers() -> None:
    init, ours = initiate(Tag.INTERMEDIATE, 2)
    assert read_start(init[:63], UNCARRIED) is None  # awaited until the whole init is there
    start = read_start(init + b"more", UNCARRIED)
    assert start is not None and (start.tag, start.size) == (Tag.INTERMEDIATE, 64)
    assert start.obfuscation is not None
    data = ours.encrypt(b"hello")
    assert start.obfuscation.decrypt(data) == b"hello"


def test_what_the_layer_does_not_carry_is_refused_with_its_words() -> None:
    with pytest.raises(StartRefused, match="the client speaks TLS"):
        read_start(b"\x16\x03\x01\x02\x00", UNCARRIED)
    with pytest.raises(StartRefused, match="no MTProto"):
        read_start(b"\x01" * 64, UNCARRIED)
