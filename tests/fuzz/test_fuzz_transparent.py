"""Property tests for what the transparent listener reads from a redirected client before it
knows where the client wants to go: the first bytes, a TLS ClientHello (its SNI) or an HTTP
head (its Host). The client is anyone on the LAN.

- any bytes -- random, a ClientHello record mutated, an HTTP head mutated -- give a bool from
  first_bytes_complete and None or a lower-case host name from name_in_first_bytes;
- a valid ClientHello record names its server, and every proper prefix of it is incomplete;
- a valid HTTP head names its Host (without the port), and every proper prefix of it is
  incomplete.

(tests/unit/test_transparent.py has the random-bytes checks; these reach the parsers' deeper
branches through valid messages and their mutations.)
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from helper.proxy.transparent import first_bytes_complete, name_in_first_bytes
from tests.fuzz.strategies import Choices, mutate
from tests.support.tls import client_hello, record

NAME = re.compile(r"^[a-z0-9_.-]{1,253}$")
METHODS = [b"GET", b"POST", b"HEAD", b"OPTIONS", b"CONNECT", b"PUT"]


def hostname(c: Choices) -> str:
    labels = [
        "".join(chr(c.pick(b"abcdefghijklmnopqrstuvwxyz0123456789")) for _ in range(1 + c.size(9)))
        for _ in range(1 + c.size(3))
    ]
    return ".".join(labels) + c.pick(["", ".com", ".org"])


def hello_record(c: Choices) -> tuple[bytes, str]:
    name = hostname(c)
    extra = b"\x00\x2b\x00\x03\x02\x03\x04" if c.chance(30) else b""  # supported_versions
    return record(client_hello(name.encode(), extra)), name


def http_head(c: Choices) -> tuple[bytes, str]:
    name = hostname(c)
    host = name + (f":{1 + c.size(65534)}" if c.chance(50) else "")
    spelled = c.pick(["Host", "host", "HOST"])
    before = c.pick([b"", b"User-Agent: x\r\n", b"Accept: */*\r\nX-A: b\r\n"])
    head = (
        c.pick(METHODS)
        + b" http://"
        + name.encode()
        + b"/ HTTP/1.1\r\n"
        + before
        + f"{spelled}: {host}\r\n".encode()
        + b"\r\n"
    )
    return head, name


def check_any(data: bytes) -> None:
    assert isinstance(first_bytes_complete(data), bool)
    name = name_in_first_bytes(data)
    assert name is None or NAME.match(name), name


def check_valid(wire: bytes, name: str) -> None:
    assert first_bytes_complete(wire)
    assert name_in_first_bytes(wire) == name
    for cut in range(len(wire)):
        assert not first_bytes_complete(wire[:cut]), f"{cut}-byte prefix called complete"


def client_hello_records(seed: bytes, trailing: bytes, junk: bytes, edits: bytes) -> None:
    wire, name = hello_record(Choices(seed))
    check_valid(wire, name)
    assert name_in_first_bytes(wire + trailing) == name  # bytes after the record stay out
    for data in (junk, mutate(wire, edits), b"\x16" + junk):
        check_any(data)


def http_heads(seed: bytes, trailing: bytes, edits: bytes) -> None:
    wire, name = http_head(Choices(seed))
    check_valid(wire, name)
    assert name_in_first_bytes(wire + trailing) == name
    check_any(mutate(wire, edits))


# --- the properties above, several to a test -----------------------------------------------
#
# Hypothesis' own work for an example (about 0.8 ms) costs more than most of these checks,
# and CI runs 10,000 examples of each test: properties share a test, and so hypothesis' work,
# each with its own input drawn as it was when it had a test of its own.


@given(
    seed=st.binary(max_size=30),
    trailing=st.binary(max_size=16),
    junk=st.binary(max_size=400),
    edits=st.binary(max_size=30),
    seed_4=st.binary(max_size=30),
    trailing_5=st.binary(max_size=16),
    edits_6=st.binary(max_size=30),
)
def test_client_hellos_and_http_heads(
    seed, trailing, junk, edits, seed_4, trailing_5, edits_6
) -> None:
    client_hello_records(seed, trailing, junk, edits)
    http_heads(seed_4, trailing_5, edits_6)
