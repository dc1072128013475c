"""`split` (transports/split.py): the exact write boundaries it produces, against a recording
fake, for every way a client may chunk its writes."""

from __future__ import annotations

import pytest

from tests.unit.scripted import ScriptedStream
from transports.base import Stream
from transports.split import SplitDialer, SplitStream


class Recording(ScriptedStream):
    def raw_socket_stream(self) -> Stream:
        return self


@pytest.mark.parametrize(
    ("offsets", "writes", "expected"),
    [
        pytest.param((1,), [b"hello"], [b"h", b"ello"], id="one-cut"),
        pytest.param((2, 5), [b"abcdefg"], [b"ab", b"cde", b"fg"], id="two-cuts-one-write"),
        pytest.param((2, 5), [b"a", b"bcdefg"], [b"a", b"b", b"cde", b"fg"], id="short-first"),
        pytest.param((3,), [b"abc", b"def"], [b"abc", b"def"], id="write-ends-at-cut"),
        pytest.param((2, 5), [b"abcde"], [b"ab", b"cde"], id="ends-at-last-cut"),
        pytest.param((10,), [b"abc", b"de"], [b"abc", b"de"], id="not-reached"),
        pytest.param((1, 2, 3), [b"abcd"], [b"a", b"b", b"c", b"d"], id="byte-by-byte"),
        pytest.param((2,), [b"", b"abc"], [b"ab", b"c"], id="empty-write"),
    ],
)
def test_write_boundaries(offsets, writes, expected) -> None:
    inner = Recording()
    stream = SplitStream(inner, offsets)
    for data in writes:
        stream.write(data)
    assert inner.writes == expected
    assert bytes(inner.written) == b"".join(writes)


def test_fast_path_only_after_the_last_cut() -> None:
    inner = Recording()
    stream = SplitStream(inner, (2, 5))
    stream.write(b"abc")
    assert stream.raw_socket_stream() is None
    stream.write(b"de")
    assert stream.raw_socket_stream() is inner
    stream.write(b"fghij")
    assert inner.writes[-1] == b"fghij"


@pytest.mark.parametrize("offsets", [(), (0,), (3, 3), (5, 2), (-1,)])
def test_dialer_rejects_bad_offsets(offsets) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        SplitDialer(None, offsets)  # type: ignore[arg-type]
