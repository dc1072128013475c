"""Property tests for the inner-ClientHello reader the Signal proxy runs on what phones send
(transports/tlsfrag.py: read_client_hello, server_name): any byte string gives a state and
never an exception; a well-formed ClientHello cut into any records reads back exactly, from
the whole and never from a prefix; the oversized are refused by the limit."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.test_fuzz_tlsfrag import _mutated_hello
from tests.support.tls import client_hello, record
from transports.tlsfrag import MAX_RECORD, read_client_hello, server_name

STATES = {"incomplete", "complete", "not-tls", "malformed", "too-large"}

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _name(raw: bytes) -> str:
    r"""A name of r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,3}" from bytes: the first says how many
    labels, each label's first its length, the rest its characters ("a" when they run out)."""
    data = iter(raw)
    labels = []
    for _ in range(1 + next(data, 0) % 4):
        size = 1 + next(data, 0) % 20
        labels.append("".join(ALNUM[next(data, 0) % len(ALNUM)] for _ in range(size)))
    return ".".join(labels)


# One draw of bytes per name: st.from_regex (and even lists of st.text) made drawing the
# name nearly all of these properties' time (a minute each at 10,000 examples).
names = st.binary(min_size=1, max_size=88).map(_name)
padding = st.integers(0, 3000).map(
    lambda n: b"\x00\x15" + n.to_bytes(2, "big") + bytes(n) if n else b""
)


def split(message: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % len(message) for c in cuts} - {0})
    bounds = [0, *points, len(message)]
    return b"".join(record(message[a:b]) for a, b in itertools.pairwise(bounds))


@given(
    st.one_of(st.binary(max_size=200), st.binary(max_size=64).map(_mutated_hello)),
    st.integers(1, 1 << 16),
)
def test_any_bytes_give_a_state(data: bytes, limit: int) -> None:
    read = read_client_hello(data, limit)
    assert read.state in STATES
    if read.state == "complete":
        assert read.message[0] == 1 and len(read.message) <= limit
        assert 0 < read.used <= len(data)
        server_name(read.message)  # never raises either


@given(names, padding, st.lists(st.integers(1, 10_000), max_size=6), st.binary(max_size=20))
def test_a_hello_in_any_records_reads_back(
    name: str, pad: bytes, cuts: list[int], after: bytes
) -> None:
    message = client_hello(name.encode(), pad)
    data = split(message, cuts)
    read = read_client_hello(data + after, MAX_RECORD)
    assert (read.state, read.message, read.used) == ("complete", message, len(data))
    assert server_name(read.message) == name
    for end in sorted({0, len(data) // 3, len(data) // 2, len(data) - 1}):
        assert read_client_hello(data[:end], MAX_RECORD).state == "incomplete"


@given(names, st.integers(200, 3000), st.lists(st.integers(1, 10_000), max_size=4))
def test_the_limit_is_kept(name: str, pad: int, cuts: list[int]) -> None:
    message = client_hello(name.encode(), b"\x00\x15" + pad.to_bytes(2, "big") + bytes(pad))
    limit = len(message) - 1
    data = split(message, cuts)
    assert read_client_hello(data, limit).state == "too-large"
    assert read_client_hello(data, len(message)).state == "complete"
