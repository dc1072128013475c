"""Property test for transports/mtproto/start.py: whatever an app's first bytes are, they are
awaited (None), read as one start, or refused with StartRefused -- nothing else -- and a
decision, once made, does not change when more bytes follow. One st.binary() per example."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support.seeded import seeded_urandom
from transports.mtproto.obfuscated2 import Tag, TransportKind, initiate
from transports.mtproto.start import ClientStart, StartRefused, read_start

UNCARRIED = {TransportKind.FULL: "full", TransportKind.HTTP: "HTTP", TransportKind.TLS: "TLS"}
INIT, _ = initiate(Tag.PADDED, 2, urandom=seeded_urandom(b"start"))  # the same every run
# An init's ciphers per example (AES key schedules): a tenth of the examples.
CRYPTO = settings(max_examples=max(20, settings().max_examples // 10))


def outcome(data: bytes) -> ClientStart | str | None:
    """The start, None, or "refused" (its message checked)."""
    try:
        return read_start(data, UNCARRIED)
    except StartRefused as exc:
        message = str(exc)
    assert message.startswith(("the client speaks ", "the client's first bytes are no MTProto"))
    return "refused"


@CRYPTO
@given(st.binary(max_size=80))
@example(INIT)
@example(b"\xee\xee\xee\xee" + bytes(60))
@example(b"\xef")
def test_first_bytes_are_awaited_read_or_refused(data: bytes) -> None:
    first = outcome(data)
    if first is None:
        return
    later = outcome(data + bytes(range(70)))
    if isinstance(first, ClientStart):
        assert isinstance(later, ClientStart)
        assert (later.tag, later.size) == (first.tag, first.size)
        assert first.size <= len(data)
        assert (first.obfuscation is None) == (first.size != 64)
    else:
        assert later == "refused"
