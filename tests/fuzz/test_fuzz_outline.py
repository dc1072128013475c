"""The Outline key server's answer (ssconf://) is untrusted bytes: parse_response gives a
status, a Location and a body, or a DialError, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from transports.base import DialError
from transports.shadowsocks.outline import parse_response


def any_answer_is_a_response_or_a_dial_error(data: bytes) -> None:
    try:
        status, location, body = parse_response(data)
    except DialError:
        return
    assert 100 <= status <= 999 and isinstance(location, str) and isinstance(body, bytes)


def a_framed_body_comes_back_whole(raw: bytes) -> None:
    # The first byte picks the framing, the rest (up to 200 bytes) is the body.
    framing, payload = ("chunked" if raw[:1] and raw[0] & 1 else "length"), raw[1:201]
    if framing == "length":
        head = f"Content-Length: {len(payload)}\r\n".encode()
        body = payload + b"trailing junk"
    else:
        head = b"Transfer-Encoding: chunked\r\n"
        body = (
            (f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
            if payload
            else b"0\r\n\r\n"
        )
    status, location, got = parse_response(
        b"HTTP/1.1 302 Found\r\nLocation: https://x.example/k\r\n" + head + b"\r\n" + body
    )
    assert (status, location, got) == (302, "https://x.example/k", payload)


# Both properties share each draw (tests/fuzz/strategies.py: a draw costs more than the
# checks): the bytes as an answer, and as a framing and a body.
@given(st.binary(max_size=512))
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
@example(b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx")
def test_any_answer_and_framed_bodies(raw: bytes) -> None:
    any_answer_is_a_response_or_a_dial_error(raw)
    a_framed_body_comes_back_whole(raw)


def test_an_answer_cut_short_is_no_config() -> None:
    """A body shorter than its Content-Length (the connection ended early) is an error, not
    the first part of a config read as the whole of it."""
    with pytest.raises(DialError, match="ended early"):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nss://abc")
    with pytest.raises(DialError, match="ended early"):
        parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nss://")
