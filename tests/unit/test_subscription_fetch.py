"""A subscription's answer read whole (helper/subscriptions/fetch.read_answer): the body of a
200 (by Content-Length, chunked, or to the end), a list larger than the limit refused as
too large and never cut short, an answer that ends early refused, the host named and the
path never."""

from __future__ import annotations

import pytest

from helper.subscriptions.fetch import read_answer
from helper.subscriptions.formats import SubscriptionError
from transports import DialError


def answer(body: bytes, head: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


def test_the_body_whole() -> None:
    assert read_answer(answer(b"abc", "Content-Length: 3\r\n")) == (200, "", b"abc")
    assert read_answer(answer(b"abcdef")) == (200, "", b"abcdef")  # to the end
    chunked = answer(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n")
    assert read_answer(chunked)[2] == b"abcde"
    moved = b"HTTP/1.1 302 Found\r\nLocation: https://b.example/x\r\n\r\n"
    assert read_answer(moved)[:2] == (302, "https://b.example/x")


@pytest.mark.parametrize(
    "data",
    [
        answer(b"x" * 101),
        answer(b"x" * 10, "Content-Length: 101\r\n"),
        answer(b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"),
    ],
)
def test_a_list_over_the_limit_is_too_large_never_cut(data: bytes) -> None:
    with pytest.raises(SubscriptionError) as caught:
        read_answer(data, limit=100)
    assert "the list is too large (more than 0 KiB" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (answer(b"abc", "Content-Length: 10\r\n"), "panel.example's answer ended early (3 of 10"),
        (answer(b"5\r\nab", "Transfer-Encoding: chunked\r\n"), "ended early (inside a chunk)"),
        (answer(b"3\r\nabc\r\n", "Transfer-Encoding: chunked\r\n"), "ended early"),
        (answer(b"zz\r\n", "Transfer-Encoding: chunked\r\n"), "bad chunk"),
        (b"garbage", "sent no HTTP answer"),
        (b"SSH-2.0-x\r\n\r\n", "sent no HTTP answer"),
    ],
)
def test_an_answer_cut_short_or_not_http_says_so(data: bytes, message: str) -> None:
    with pytest.raises(DialError) as caught:
        read_answer(data, host="panel.example")
    assert message in str(caught.value)
