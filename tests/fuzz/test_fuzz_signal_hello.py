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

# Each property's input is one byte string read as what it stands for (names, cut points,
# sizes): drawing a character, an integer or a field at a time costs hypothesis far more
# than the reader it feeds, and CI runs 10,000 examples of each property.
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789."


def _name(raw: bytes) -> str:
    """A host name of 1-4 labels of 1-20 letters and digits."""
    text = "".join(_ALPHABET[b % len(_ALPHABET)] for b in raw)
    found = [label[:20] for label in text.split(".") if label][:4]
    return ".".join(found) or "a"


def _cuts(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i : i + 2], "big") % 10_000 + 1 for i in range(0, len(raw) - 1, 2)]


def split(message: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % len(message) for c in cuts} - {0})
    bounds = [0, *points, len(message)]
    return b"".join(record(message[a:b]) for a, b in itertools.pairwise(bounds))


def _bytes_and_limit(draw: bytes) -> tuple[bytes, int]:
    """Raw bytes (up to 200) or a mutated ClientHello (from up to 64), and a limit of
    1-65536: one draw, its first three bytes the choice and the limit."""
    limit = 1 + (draw[1] << 8 | draw[2])
    data = _mutated_hello(draw[3 : 3 + 64]) if draw[0] % 2 else draw[3:]
    return data, limit


def any_bytes_give_a_state(case: tuple[bytes, int]) -> None:
    data, limit = case
    read = read_client_hello(data, limit)
    assert read.state in STATES
    if read.state == "complete":
        assert read.message[0] == 1 and len(read.message) <= limit
        assert 0 < read.used <= len(data)
        server_name(read.message)  # never raises either


def _hello_case(draw: bytes) -> tuple[str, bytes, list[int], bytes]:
    """(a name from up to 60 bytes, padding of 0-3000 bytes, up to 6 cuts, up to 20 bytes
    after), from one draw: lengths in a head of fixed size (2 + 1 + 1 + 12), then the
    name's bytes and the bytes after, as the head says."""
    n = (draw[0] << 8 | draw[1]) % 3001
    pad = b"\x00\x15" + n.to_bytes(2, "big") + bytes(n) if n else b""
    name_size, cut_count = 1 + draw[2] % 60, draw[3] % 7
    cuts = _cuts(draw[4 : 4 + 2 * cut_count])
    rest = draw[16:]
    return _name(rest[:name_size]), pad, cuts, rest[name_size : name_size + 20]


def a_hello_in_any_records_reads_back(case: tuple[str, bytes, list[int], bytes]) -> None:
    name, pad, cuts, after = case
    message = client_hello(name.encode(), pad)
    data = split(message, cuts)
    read = read_client_hello(data + after, MAX_RECORD)
    assert (read.state, read.message, read.used) == ("complete", message, len(data))
    assert server_name(read.message) == name
    for end in sorted({0, len(data) // 3, len(data) // 2, len(data) - 1}):
        assert read_client_hello(data[:end], MAX_RECORD).state == "incomplete"


def the_limit_is_kept(draw: bytes) -> None:
    # One draw: padding of 200-3000 bytes, up to 4 cuts, then the name's bytes.
    pad = 200 + (draw[0] << 8 | draw[1]) % 2801
    cuts, name = _cuts(draw[3 : 3 + 2 * (draw[2] % 5)]), _name(draw[11:])
    message = client_hello(name.encode(), b"\x00\x15" + pad.to_bytes(2, "big") + bytes(pad))
    limit = len(message) - 1
    data = split(message, cuts)
    assert read_client_hello(data, limit).state == "too-large"
    assert read_client_hello(data, len(message)).state == "complete"


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    case=st.binary(min_size=3, max_size=3 + 200).map(_bytes_and_limit),
    case_1=st.binary(min_size=17, max_size=16 + 80).map(_hello_case),
    draw=st.binary(min_size=12, max_size=11 + 60),
)
def test_any_bytes_hellos_in_records_and_the_limit(case, case_1, draw) -> None:
    any_bytes_give_a_state(case)
    a_hello_in_any_records_reads_back(case_1)
    the_limit_is_kept(draw)
