"""Property tests for the SOCKS parsers, which read bytes from anyone who can connect.

One property per parser (so each parser gets the profile's full example count; the four
share one test, each on its own input), checking for every example:

- any bytes (random, or a valid message mutated) give a result, NeedMore, or ProtocolError
  whose reply is bytes; nothing else;
- a verdict, once reached, never changes when more bytes arrive (the listener re-parses a
  growing buffer), and a result consumes exactly the message;
- a valid message gives NeedMore for every proper prefix and the expected message for the
  whole, with the bytes after it left alone;
- read_message returns the same message however the bytes are chunked, and puts exactly the
  bytes after the message back on the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from helper.proxy.handshake import NeedMore, ProtocolError, read_message
from helper.proxy.socks import (
    SOCKS4_REQUEST_LIMIT,
    SOCKS5_AUTH_LIMIT,
    SOCKS5_GREETING_LIMIT,
    SOCKS5_REQUEST_LIMIT,
    parse_socks4_request,
    parse_socks5_auth,
    parse_socks5_greeting,
    parse_socks5_request,
)
from tests.fuzz.strategies import (
    _greeting_from,
    _login,
    _socks4_request,
    _socks5_request,
    mutate,
)
from tests.unit.scripted import ScriptedStream, run_without_loop

Parser = Callable[[bytes], tuple[int, Any]]


def verdict(parse: Parser, buf: bytes) -> tuple[str, Any]:
    """("ok", (consumed, message)) | ("more", None) | ("error", reply); any other exception
    propagates and fails the property."""
    error: ProtocolError | None = None
    try:
        consumed, message = parse(buf)
    except NeedMore:
        return "more", None
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert isinstance(error.reply, bytes), f"reply is {type(error.reply).__name__}"
        assert str(error), "a ProtocolError says what was wrong"
        return "error", error.reply
    assert 0 < consumed <= len(buf)
    return "ok", (consumed, message)


def check_any_bytes(parse: Parser, buf: bytes, extra: bytes) -> None:
    first = verdict(parse, buf)
    if first[0] == "ok":
        consumed, message = first[1]
        assert verdict(parse, buf[:consumed]) == first
        assert verdict(parse, buf[: consumed - 1])[0] != "ok"
    if first[0] != "more":
        assert verdict(parse, buf + extra) == first, "more bytes changed a verdict"


def check_valid(parse: Parser, wire: bytes, expected: Any, trailing: bytes) -> None:
    for cut in range(len(wire)):
        try:  # (pytest.raises costs more than the parser: this loop runs per byte)
            parse(wire[:cut])
        except NeedMore:
            continue
        raise AssertionError(f"a {cut}-byte prefix of a valid message did not raise NeedMore")
    assert parse(wire) == (len(wire), expected)
    assert parse(wire + trailing) == (len(wire), expected)


def check_read_message(
    parse: Parser, limit: int, data: bytes, cuts: bytes, expected: Any, trailing: bytes
) -> None:
    # Each byte of `cuts` is a split point, scaled to the data's length.
    bounds = sorted({0, len(data), *(c * len(data) // 256 for c in cuts)})
    stream = ScriptedStream(data[a:b] for a, b in pairwise(bounds))
    assert run_without_loop(read_message(stream, parse, limit)) == expected
    assert stream.remaining() == trailing
    assert all(n <= limit for n in stream.read_sizes)


def _property(
    name: str, parse: Parser, valid: Callable[[bytes], tuple[bytes, Any]], limit: int
) -> Callable[[Any], None]:
    def prop(example: tuple[tuple[bytes, Any], bytes, bytes, bytes, bytes]) -> None:
        (wire, expected), trailing, cuts, junk, edits = example
        check_valid(parse, wire, expected, trailing)
        check_read_message(parse, limit, wire + trailing, cuts, expected, trailing)
        check_any_bytes(parse, junk, trailing)
        check_any_bytes(parse, mutate(wire, edits), trailing)

    prop.__name__ = prop.__qualname__ = f"_prop_{name}"
    prop.__doc__ = f"{parse.__name__}: the properties in this module's docstring."
    return prop


def _examples(decode: Callable[[bytes], tuple[bytes, Any]], size: int) -> st.SearchStrategy[Any]:
    """(valid message, bytes after it, split points, random bytes, edits) from two draws:
    hypothesis' cost grows with the number of draws, and was most of these properties' time
    with one draw per part. A fixed-size draw holds the `size` bytes the valid message is
    decoded from, then the lengths and bytes of the others (bytes after the message: up to
    24; split points for read_message: up to 6; edits that make the message near-valid: 3
    to 12); the random bytes are a draw of their own (up to 600), as they were."""
    fixed = size + 3 + 24 + 6 + 12

    def split(raw: tuple[bytes, bytes]) -> tuple[Any, bytes, bytes, bytes, bytes]:
        head, junk = raw
        n_trailing, n_cuts, n_edits = head[size] % 25, head[size + 1] % 7, 3 + head[size + 2] % 10
        rest = head[size + 3 :]
        trailing, cuts, edits = rest[:n_trailing], rest[24 : 24 + n_cuts], rest[30 : 30 + n_edits]
        return decode(head[:size]), trailing, cuts, junk, edits

    return st.tuples(st.binary(min_size=fixed, max_size=fixed), st.binary(max_size=600)).map(split)


# The valid messages are decoded as strategies.socks5_greetings etc. decode them, from the
# same number of bytes.
_prop_socks5_greeting = _property(
    "socks5_greeting", parse_socks5_greeting, _greeting_from, SOCKS5_GREETING_LIMIT
)
_prop_socks5_auth = _property("socks5_auth", parse_socks5_auth, _login, SOCKS5_AUTH_LIMIT)
_prop_socks5_request = _property(
    "socks5_request", parse_socks5_request, _socks5_request, SOCKS5_REQUEST_LIMIT
)
_prop_socks4_request = _property(
    "socks4_request", parse_socks4_request, _socks4_request, SOCKS4_REQUEST_LIMIT
)


# --- the properties above, in one test ------------------------------------------------------
#
# Hypothesis' own work for an example costs more than most of these checks, and CI runs
# 10,000 examples of each test: the four parsers share a test, and so hypothesis' work, each
# with its own input drawn as it was when it had a test of its own.


@given(
    greeting=_examples(_greeting_from, 40),
    auth=_examples(_login, 48),
    request5=_examples(_socks5_request, 40),
    request4=_examples(_socks4_request, 48),
)
def test_socks5_and_socks4_parsers(greeting, auth, request5, request4) -> None:
    """parse_socks5_greeting, parse_socks5_auth, parse_socks5_request and
    parse_socks4_request, each on its own input: the properties in this module's docstring."""
    _prop_socks5_greeting(greeting)
    _prop_socks5_auth(auth)
    _prop_socks5_request(request5)
    _prop_socks4_request(request4)
